"""GGUF files served with llama.cpp (llama-cpp-python), each under its own model name.

The same interface as tunelab.serve.engine.Engine, so the FastAPI app serves either.
Everything llama.cpp does goes through tunelab.deploy.llama_runtime, the module the
parity check uses: chat prompts from the template stored in the GGUF, sampling, the
end-of-generation test. What is served is what the parity check measured.

Concurrency: a llama.cpp context is not thread-safe, and llama-cpp-python's high-level
``Llama`` has no multi-sequence batching (one KV cache, one sequence at a time). So each
model has its own ``Llama`` and its own single worker thread: requests to different
models run at the same time, requests to one model queue behind each other (the shared
pending limit of tunelab.serve.jobs applies over all of them). Prompts are tokenized on
the event loop while a worker may be generating with the same model; that touches only
the vocabulary, which llama.cpp never changes after loading (llama.cpp's own server
tokenizes on its HTTP threads the same way).

``response_format`` json_object / json_schema become a llama.cpp grammar
(``LlamaGrammar``), built per request and checked to compile before the request is
queued, so a schema llama.cpp cannot use is a 400 and not a failed stream.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from tunelab.deploy import llama_runtime
from tunelab.errors import DeployError
from tunelab.serve.jobs import DEFAULT_MAX_PENDING, Job, JobRunner, TextAssembler, finish
from tunelab.serve.schemas import ApiError, ResponseFormat, model_not_found

# llama.cpp's sampler seed is 32 bits, and 0xFFFFFFFF (LLAMA_DEFAULT_SEED) means "random".
SEEDS = 2**32 - 1


class GgufEngine:
    def __init__(self, models: dict, max_pending: int = DEFAULT_MAX_PENDING):
        """``models``: {name: llama_cpp.Llama}; the engine closes them."""
        self.models = dict(models)
        # Every model is loaded with the same --context; the smallest is the safe bound.
        self.max_context = min(map(llama_runtime.context_size, self.models.values()))
        self._jobs = JobRunner(max_pending)
        self._workers = {name: ThreadPoolExecutor(max_workers=1,
                                                  thread_name_prefix=f"tunelab-gguf-{name}")
                         for name in self.models}

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def check_model(self, name: str) -> None:
        if name not in self.models:
            raise model_not_found(name, self.names)

    def chat_prompt(self, model: str, messages: list[dict],
                    tools: list[dict] | None = None) -> list[int]:
        try:
            return llama_runtime.chat_prompt_tokens(self.models[model], messages, tools)
        except DeployError as err:  # the GGUF has no chat template
            raise ApiError(400, f"messages: {model}: {err}", param="messages") from None
        except Exception as err:  # the template itself rejects e.g. a role order
            raise ApiError(400, f"messages: the chat template rejected them: {err}",
                           param="messages") from None

    def text_prompt(self, model: str, text: str) -> list[int]:
        return llama_runtime.text_tokens(self.models[model], text)

    def chat_template(self, model: str) -> str:
        return llama_runtime.chat_template(self.models[model])

    def constraint(self, model: str, response_format: ResponseFormat | None):
        """The llama.cpp grammar ``response_format`` asks for, or None for plain text.

        A new one per request: in llama-cpp-python 0.3 a ``LlamaGrammar`` holds only the
        GBNF text (the parse state lives in the sampler each generate() builds), but
        older versions kept the parse state in the object itself, and a shared one
        would carry one answer's position into the next."""
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

        if response_format is None or response_format.type == "text":
            return None
        schema = response_format.json_schema.schema_ if response_format.json_schema else None
        if schema is None:  # json_object, or json_schema without a schema: any JSON object
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        param = "response_format.json_schema.schema"
        try:  # what LlamaGrammar.from_json_schema does, with the GBNF text kept to check it
            gbnf = json_schema_to_gbnf(json.dumps(schema))
        except Exception as err:  # the converter asserts and raises whatever it meets
            raise ApiError(400, f"{param}: llama.cpp cannot turn this JSON schema into a "
                           f"grammar: {type(err).__name__}: {err}", param=param,
                           code="invalid_json_schema") from None
        if not grammar_compiles(self.models[model], gbnf):
            raise ApiError(400, f"{param}: the grammar made from this JSON schema does not "
                           "parse in llama.cpp", param=param, code="invalid_json_schema")
        return LlamaGrammar.from_string(gbnf, verbose=False)

    def submit(self, **job_fields) -> Job:
        """Queue a generation on its model's worker; events arrive on ``job.events()``."""
        return self._jobs.submit(self._workers[job_fields["model"]], self._generate,
                                 **job_fields)

    def close(self) -> None:
        for worker in self._workers.values():
            worker.shutdown(wait=True, cancel_futures=True)
        for llm in self.models.values():
            llm.close()

    def _generate(self, job: Job) -> None:
        llm = self.models[job.model]
        assembler = TextAssembler(_LlamaText(llm), job.stops,
                                  lambda token_id: llama_runtime.is_end_of_generation(llm,
                                                                                      token_id))
        # No seed: a fresh one, so unseeded sampling varies from request to request (as on
        # OpenAI and the transformers engine) instead of repeating the last seed's answer.
        seed = random.randrange(SEEDS) if job.seed is None else job.seed % SEEDS
        for token_id in llama_runtime.stream_ids(
                llm, job.prompt_ids, job.max_new_tokens, temperature=job.temperature,
                top_p=job.top_p, seed=seed, grammar=job.constraint,
                cancelled=lambda: job.cancel.is_set() or assembler.finish_reason is not None):
            delta = assembler.feed(token_id)
            if delta:
                job.emit(("text", delta))
        finish(job, assembler)


class _LlamaText:
    """The one tokenizer method TextAssembler calls, over llama_runtime.decode (which
    always leaves special tokens out)."""

    def __init__(self, llm):
        self.llm = llm

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return llama_runtime.decode(self.llm, token_ids)


def grammar_compiles(llm, gbnf: str) -> bool:
    """Whether llama.cpp parses the grammar ``gbnf``: a grammar sampler is built and freed.
    (llama-cpp-python would add the NULL sampler of a failed one mid-request.)"""
    import llama_cpp
    from llama_cpp.llama_grammar import LLAMA_GRAMMAR_DEFAULT_ROOT

    sampler = llama_cpp.llama_sampler_init_grammar(
        llama_cpp.llama_model_get_vocab(llm.model), gbnf.encode("utf-8"),
        LLAMA_GRAMMAR_DEFAULT_ROOT.encode("utf-8"))
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def load(files: dict[str, Path], context: int = llama_runtime.DEFAULT_CONTEXT,
         threads: int | None = None,
         on_progress: Callable[[str], None] = lambda line: None) -> GgufEngine:
    """A GgufEngine for {name: GGUF file}; a file llama.cpp cannot load is a one-line
    DeployError naming it (the models loaded before it are closed again)."""
    loaded = {}
    try:
        for name, path in files.items():
            on_progress(f"loading {path} as '{name}' (llama.cpp, {context} tokens of context)")
            loaded[name] = llama_runtime.load(path, context=context, threads=threads)
    except BaseException:
        for llm in loaded.values():
            llm.close()
        raise
    return GgufEngine(loaded)
