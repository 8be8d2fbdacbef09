"""The judge model: a chat in, the text of its verdict out.

``judge.model`` picks the engine (``open_engine``):

    smollm2-135m-instruct, models/judge.gguf  GgufJudge: the GGUF file through llama.cpp
        (tunelab.deploy.llama_runtime, as the parity check and `tunelab serve --gguf` run
        one): the chat prompt from the file's own template, greedy, the output bound by a
        grammar made from the verdict's JSON schema (LlamaGrammar.from_json_schema).
    http://host:port/v1                       EndpointJudge: any OpenAI-compatible server
        (Ollama, llama-server, vLLM, `tunelab serve`) through the official ``openai``
        client, greedy, the schema sent as ``response_format`` json_schema. Its API key is
        read from the environment variable ``judge.api_key_env`` (none when unset), never
        from params.yaml, which Git shares.

Both have ``answer(messages, schema, name) -> str``, ``close()``, ``engine`` and ``details``
(what judge.json records beside the engine's name). Everything that stops an endpoint from
answering (down, a refused key, an HTTP error) is one JudgeError line naming the URL.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from tunelab.deploy import llama_runtime
from tunelab.errors import (DeployError, JudgeError, MissingExtraError, ModelSourceError,
                            ParamsError)
from tunelab.models import source

ENDPOINT_SCHEMES = ("http://", "https://")
CONTEXT = 4096      # llama.cpp tokens: the judge's rules, a request, its reference, two answers
MAX_RETRIES = 1     # the openai client's retries of a failed connection or a 429/5xx answer
REASON_CHARACTERS = 200  # of an endpoint's error message in the one-line error


def open_engine(p):
    """The engine ``p`` (the loaded `judge` section) names; ``p.model`` is not ""."""
    if p.model.startswith(ENDPOINT_SCHEMES):
        return EndpointJudge(p.model, p.endpoint_model, p.api_key_env, p.max_new_tokens,
                             p.timeout)
    return GgufJudge(gguf_file(p.model), p.max_new_tokens, threads=p.threads or None)


def gguf_file(model: str) -> Path:
    """The GGUF file of a built-in name or a .gguf path (relative to the repository)."""
    if model in source.BUILTIN_MODELS:
        try:
            found = source.resolve(model)
        except ModelSourceError as err:  # its words name model.base, the usual asker
            raise ModelSourceError(str(err).replace("model.base", "judge.model", 1)) from None
        return Path(found.location) / found.gguf_file
    if model.endswith(".gguf"):
        if not Path(model).is_file():
            raise ModelSourceError(f"judge.model: GGUF file {model} not found")
        return Path(model)
    raise ParamsError(f"judge.model: {model!r} is not a built-in model "
                      f"({', '.join(source.BUILTIN_MODELS)}), a .gguf file or an http(s):// "
                      "endpoint URL (\"\" = no judge)")


class GgufJudge:
    engine = "llama.cpp"

    def __init__(self, path: Path, max_new_tokens: int, context: int = CONTEXT,
                 threads: int | None = None):
        require("llama_cpp", "gguf", f"judge.model {path}")
        self.path, self.max_new_tokens = path, max_new_tokens
        self.llm = llama_runtime.load(path, context=context, threads=threads)
        # judge.json names the CPU kernels the verdicts came from (llama_runtime.cpu_backend)
        self.details = {"llama_cpp_cpu": llama_runtime.cpu_backend()}
        self._gbnf: dict[str, str] = {}  # schema JSON -> its grammar text

    def answer(self, messages: list[dict], schema: dict, name: str) -> str:
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        key = json.dumps(schema, sort_keys=True)
        if key not in self._gbnf:
            self._gbnf[key] = json_schema_to_gbnf(key)
        # A new grammar object per answer: older llama-cpp-python kept the parse state in it.
        grammar = LlamaGrammar.from_string(self._gbnf[key], verbose=False)
        prompt = llama_runtime.chat_prompt_tokens(self.llm, messages)
        try:
            return llama_runtime.generate(self.llm, prompt, self.max_new_tokens,
                                          grammar=grammar).text
        except DeployError as err:  # the prompt does not fit the context
            raise JudgeError(f"judge.model: {self.path}: {err}") from None

    def close(self) -> None:
        self.llm.close()


class EndpointJudge:
    engine = "endpoint"

    def __init__(self, url: str, model: str, api_key_env: str, max_new_tokens: int,
                 timeout: float):
        require("openai", "judge", f"judge.model {url}")
        import openai

        if not model:
            raise ParamsError(f"judge.endpoint_model: name the model to ask {url} for (its "
                              "/models lists them), got \"\"")
        self.url, self.model, self.api_key_env = url.rstrip("/"), model, api_key_env
        self.max_new_tokens, self.timeout = max_new_tokens, timeout
        self.details = {"endpoint_model": model}
        # The client needs some key; a server that checks none ignores this one.
        self.client = openai.OpenAI(base_url=self.url, timeout=timeout, max_retries=MAX_RETRIES,
                                    api_key=os.environ.get(api_key_env) or "no-key")

    def answer(self, messages: list[dict], schema: dict, name: str) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_new_tokens,
                temperature=0, response_format={"type": "json_schema", "json_schema": {
                    "name": name, "schema": schema, "strict": True}})
        except openai.APITimeoutError:
            raise JudgeError(f"judge.model: {self.url}: no answer within judge.timeout "
                             f"({self.timeout:g} s)") from None
        except openai.APIConnectionError as err:
            raise JudgeError(f"judge.model: {self.url}: cannot connect "
                             f"({one_line(err.__cause__ or err)}); is the server running?"
                             ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            key = (f"${self.api_key_env} is not set" if not os.environ.get(self.api_key_env)
                   else f"the key in ${self.api_key_env}")
            raise JudgeError(f"judge.model: {self.url}: refused the API key (HTTP "
                             f"{err.status_code}: {reason(err)}; {key})") from None
        except openai.APIStatusError as err:
            hint = " (does the URL end in /v1?)" if err.status_code == 404 else ""
            raise JudgeError(f"judge.model: {self.url}: HTTP {err.status_code}: "
                             f"{reason(err)}{hint}") from None
        choice = response.choices[0] if response.choices else None
        return (choice.message.content or "") if choice else ""

    def close(self) -> None:
        self.client.close()


def reason(err) -> str:
    """An HTTP error's own message (OpenAI's {"error": {"message"}} or FastAPI's
    {"detail"}), on one line."""
    body = err.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"].get("message")
    elif isinstance(body, dict):
        body = body.get("error") or body.get("message") or body.get("detail")
    return one_line(body or err.message)


def one_line(text) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= REASON_CHARACTERS else words[:REASON_CHARACTERS] + "..."


def require(module: str, extra: str, what: str) -> None:
    """A one-line MissingExtraError unless ``module`` imports."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:  # installed but broken: the real error says more
            raise
        raise MissingExtraError(f'{what} needs the {extra} extra: pip install '
                                f'"tunelab[{extra}]"') from None
