"""`tunelab bench-json`: valid JSON and task accuracy with and without ``response_format``.

    tunelab bench-json --gguf tuned=models/gguf/tuned-q8_0.gguf

The shipped task answers with a JSON object, and `tunelab serve --gguf` can force one
with ``response_format`` (a llama.cpp grammar). What that buys and costs is measured
here: one GGUF file is served by `tunelab serve`'s own app (in this process, on a free
127.0.0.1 port, loaded as `serve` loads it), and every chat example of the test split
goes through the official ``openai`` client three ways, greedy and with the
evaluation's token budget:

    none         no response_format: what the model writes by itself
    json_object  any JSON object
    json_schema  an object of the references' keys and value types (reference_schema)

Each way is scored with the evaluation's own ``task_scores`` (json_valid, exact_match,
field_*, task_accuracy) against the reference answers (each example's final assistant
message), and timed (wall seconds, completion tokens per second). Why all three: a
grammar makes every answer parse only if it closes within max_tokens (``truncated``
counts those that did not), it may change the values the model picks (accuracy can fall
as well as rise), and it costs time per token. Requests go one at a time (the engine
runs one per model anyway), so tokens/s is the speed of a single stream.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from tunelab.bench import server_load
from tunelab.data import encoding
from tunelab.errors import DataError
from tunelab.eval import scoring
from tunelab.util import files, machine

WAYS = ("none", "json_object", "json_schema")
# JSON type names, in the order a schema lists a key's types (json_type tests bool first).
JSON_TYPES = (("string", str), ("integer", int), ("number", float), ("boolean", bool),
              ("null", type(None)), ("object", dict), ("array", list))
VERSIONS = ("llama-cpp-python", "openai", "fastapi", "uvicorn", "tunelab")


def run(gguf_spec: str, output: Path, test_file: Path, max_examples: int, max_tokens: int,
        context: int | None = None) -> dict:
    """Serve ``gguf_spec`` (``NAME=FILE``), send the test split's chat examples
    (the first ``max_examples``; 0 = all) every way, write the result to ``output`` and
    return it. Bad input (test file, references, GGUF path) is a one-line error before
    the model loads."""
    from tunelab.serve import server

    name, gguf_file = server.parse_gguf_spec(gguf_spec)
    examples = chat_examples(test_file)[:max_examples or None]
    prompts = [encoding.split_prompt(e)[0] for e in examples]
    references = [encoding.split_prompt(e)[1]["content"] for e in examples]
    schema = reference_schema(parsed_references(examples, test_file))
    formats = {"none": None, "json_object": {"type": "json_object"},
               "json_schema": {"type": "json_schema",
                               "json_schema": {"name": "reference", "schema": schema,
                                               "strict": True}}}
    machine_info = machine_context()  # before the runs: the load average is the background
    api_key = secrets.token_hex(16)   # a private server: nobody else needs the key
    url, stop_server = server_load.start_server(None, [], api_key, [gguf_spec], context)
    try:
        client = _client(url, api_key)
        # One untimed request first: llama.cpp's first compute allocates its buffers, and
        # that would be charged to whichever way ran first.
        _ask(client, name, prompts[0], 1, None, examples[0])
        ways = {way: run_way(client, name, prompts, references, examples, max_tokens,
                             formats[way]) for way in WAYS}
    finally:
        stop_server()
    result = {
        "machine": machine_info,
        "config": {"model": name, "gguf_file": str(gguf_file),
                   "gguf_bytes": gguf_file.stat().st_size, "test_file": str(test_file),
                   "examples": len(examples), "max_tokens": max_tokens,
                   "context": context, "temperature": 0, "schema": schema},
        "ways": ways,
    }
    files.write_json_atomic(output, result)
    return result


def chat_examples(test_file: Path) -> list[dict]:
    """The chat examples of ``test_file`` (prepared JSONL); none is a one-line DataError."""
    if not Path(test_file).is_file():
        raise DataError(f"{test_file}: file not found (run `dvc repro prepare`, or pass --test)")
    chat = [e for e in files.read_jsonl(test_file) if "messages" in e]
    if not chat:
        raise DataError(f"{test_file}: no chat examples (records with 'messages'); "
                        "bench-json needs prompts with reference answers")
    return chat


def parsed_references(examples: list[dict], test_file: Path) -> list[dict]:
    """Each example's reference answer as a JSON object, parsed as task_scores parses it."""
    parsed = []
    for number, example in enumerate(examples, start=1):
        value = scoring.parse_json_object(encoding.split_prompt(example)[1]["content"])
        if value is None:
            where = example.get("source") or f"example {number}"
            raise DataError(f"{test_file}: {where}: the reference answer is not a JSON object; "
                            "bench-json measures JSON answers")
        parsed.append(value)
    return parsed


def reference_schema(references: list[dict]) -> dict:
    """A JSON schema the references all match: every key any of them has (in order of
    first appearance), typed as the JSON types its values have; required = the keys of
    every reference; no other keys. A key seen as integer and number is a number."""
    seen: dict[str, set[str]] = {}
    for reference in references:
        for key, value in reference.items():
            seen.setdefault(key, set()).add(json_type(value))
    properties = {}
    for key, types in seen.items():
        if {"integer", "number"} <= types:
            types.discard("integer")
        ordered = [t for t, _ in JSON_TYPES if t in types]
        properties[key] = {"type": ordered[0] if len(ordered) == 1 else ordered}
    return {"type": "object", "properties": properties,
            "required": [key for key in seen if all(key in r for r in references)],
            "additionalProperties": False}


def json_type(value) -> str:
    if isinstance(value, bool):  # checked first: bool is a subclass of int
        return "boolean"
    return next(name for name, kind in JSON_TYPES if isinstance(value, kind))


def run_way(client, model: str, prompts: list[list[dict]], references: list[str],
            examples: list[dict], max_tokens: int, response_format: dict | None) -> dict:
    answers, tokens, truncated = [], 0, 0
    started = time.perf_counter()
    for prompt, example in zip(prompts, examples):
        choice, used = _ask(client, model, prompt, max_tokens, response_format, example)
        answers.append(choice.message.content.strip())  # as the evaluation strips its answers
        tokens += used.completion_tokens
        truncated += choice.finish_reason == "length"
    wall = time.perf_counter() - started
    scores = scoring.task_scores(answers, references)
    return {"response_format": response_format,
            "scores": {key: round(value, 6) for key, value in scores.items()},
            "wall_seconds": round(wall, 3), "completion_tokens": tokens,
            "tokens_per_second": round(tokens / wall, 2) if wall else None,
            "truncated": truncated, "answers": answers}


def _client(url: str, api_key: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=600)


def _ask(client, model: str, messages: list[dict], max_tokens: int,
         response_format: dict | None, example: dict):
    """(choice, usage) of one greedy chat request; a refused one is a one-line DataError."""
    import openai

    extra = {"response_format": response_format} if response_format else {}
    try:
        response = client.chat.completions.create(model=model, messages=messages,
                                                  max_tokens=max_tokens, temperature=0,
                                                  **extra)
    except openai.BadRequestError as err:  # e.g. a prompt longer than the context
        message = err.body.get("message") if isinstance(err.body, dict) else err.message
        raise DataError(f"{example.get('source') or 'a test example'}: the server refused it "
                        f"(400): {message}") from None
    return response.choices[0], response.usage


def machine_context() -> dict:
    """The machine block, as metrics/bench.json records it, for llama.cpp: it runs on the
    CPU with one thread per core (llama_runtime.load's default), so torch's figures
    there would say nothing about this run."""
    return {"cpu": machine.cpu_model(), "cpu_cores": os.cpu_count(),
            "llama_cpp_threads": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "versions": machine.package_versions(VERSIONS)}


def table(result: dict):
    """A rich Table of the result, one row per way."""
    from rich.table import Table

    config = result["config"]
    out = Table(title=f"tunelab bench-json: {config['model']} ({Path(config['gguf_file']).name}),"
                      f" {config['examples']} examples, max_tokens {config['max_tokens']}",
                caption="exact = exact_match, accuracy = task_accuracy, truncated = answers "
                        "cut at max_tokens")
    for column in ("way", "json_valid", "exact", "accuracy", "truncated", "tok/s", "wall s"):
        out.add_column(column, justify="left" if column == "way" else "right")
    for way, row in result["ways"].items():
        scores = row["scores"]
        out.add_row(way, f"{scores['json_valid']:.3f}", f"{scores['exact_match']:.3f}",
                    f"{scores['task_accuracy']:.3f}", str(row["truncated"]),
                    f"{row['tokens_per_second']:.1f}", f"{row['wall_seconds']:.2f}")
    return out
