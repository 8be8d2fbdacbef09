"""`tunelab serve`: an OpenAI-compatible HTTP API (FastAPI + uvicorn) for one base
model and its LoRA adapters (tunelab.serve.engine, transformers), or for GGUF files
(tunelab.serve.gguf_engine, llama.cpp), each chosen per request by the ``model`` field.

    GET  /health                 liveness, no key needed
    GET  /v1/models              every served model (base and adapters, or GGUF names)
    POST /v1/chat/completions    chat template applied; ``stream`` = server-sent events
    POST /v1/completions         raw prompt text

Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}``:
400 for a bad request (also malformed JSON and schema errors, not FastAPI's 422),
401 for a missing or wrong key, 404 for an unknown model or route, 413 for a body over
MAX_BODY_BYTES however it is sent (body_limit), 429 when too many requests are pending.
A field the server does not honour is a 400 naming it (schemas).

Tools are rendered as training renders them (tunelab.data.tool_calls), and ``<tool_call>``
blocks in the answer come back as OpenAI's ``tool_calls`` (finish reason ``tool_calls``;
blocks that are not calls of the request's tools stay text). Streaming with tools is a
400 naming ``stream``: a call can only be told from text once the answer is complete.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations,
# and those of handlers defined inside create_app() must stay real objects.

import hmac
import ipaddress
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from tunelab.chat import reasoning
from tunelab.data import tool_calls
from tunelab.deploy.llama_runtime import DEFAULT_CONTEXT
from tunelab.serve.body_limit import BodyLimit
from tunelab.serve.schemas import (ApiError, ChatCompletionRequest, CompletionRequest,
                                   SamplingRequest, chat_chunk, chat_response, completion_chunk,
                                   completion_response, error_body, new_id, usage)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_BASE = "models/base"
DEFAULT_MAX_TOKENS_LIMIT = 512
API_KEY_ENV = "TUNELAB_API_KEY"
MAX_BODY_BYTES = 4 * 1024 * 1024  # far above any prompt a 2k-8k context model can take
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")

log = logging.getLogger("tunelab.serve.server")


def create_app(engine, api_key: str | None = None,
               max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT):
    """The FastAPI app serving ``engine`` (an engine.Engine or a gguf_engine.GgufEngine)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="tunelab", docs_url=None, redoc_url=None)
    app.state.engine = engine
    # Added first, so it runs inside the key check: a caller without the key gets its 401
    # before any of the body is read.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        # A middleware, not a dependency: it runs before the body is parsed, so a
        # caller without the key learns nothing from validation errors.
        if api_key and request.url.path.startswith("/v1") and not key_matches(request, api_key):
            return _error_response(ApiError(
                401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'",
                code="invalid_api_key"))
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        return _error_response(_validation_error(err.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        code = "not_found" if err.status_code == 404 else None
        return _error_response(ApiError(err.status_code, f"{request.method} {request.url.path}: "
                                        f"{err.detail}", code=code))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception):
        log.exception("unhandled error")
        return _error_response(ApiError(500, "internal server error; see the server log",
                                        kind="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(name) for name in engine.names]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        engine.check_model(name)
        return _model_card(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        engine.check_model(body.model)
        tools = body.template_tools()
        if tools and body.stream:
            raise ApiError(400, "stream: streaming with tools is not supported by this server "
                           "(tool calls are read from the whole answer); send stream false",
                           param="stream", code="unsupported_parameter")
        prompt = engine.chat_prompt(body.model,
                                    [m.as_template_message() for m in body.messages], tools)
        return await respond(body, prompt, chat=True,
                             tool_names=[tool["function"]["name"] for tool in tools or []])

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        engine.check_model(body.model)
        return await respond(body, engine.text_prompt(body.model, body.prompt), chat=False)

    async def respond(body: SamplingRequest, prompt: list[int], chat: bool,
                      tool_names: list[str] = ()):
        constraint = engine.constraint(body.model, body.response_format)  # 400 if unusable
        job = engine.submit(
            model=body.model, prompt_ids=prompt, constraint=constraint,
            max_new_tokens=_max_new_tokens(body, len(prompt), engine.max_context,
                                           max_tokens_limit),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed,
            stops=body.stop or [])
        if body.stream:
            return StreamingResponse(_sse(job, body.model, chat, body.include_usage()),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        parts = []
        try:
            async for event in job.events():
                if event[0] == "text":
                    parts.append(event[1])
                elif event[0] == "error":
                    raise ApiError(500, event[1], kind="server_error")
                else:
                    _, finish_reason, prompt_tokens, completion_tokens = event
        finally:
            job.cancel.set()  # the caller went away mid-way: stop generating for it
        text = "".join(parts)
        if not chat:
            return completion_response(body.model, text, finish_reason, prompt_tokens,
                                       completion_tokens)
        thought, text = reasoning.split(text, engine.chat_template(body.model))
        text, calls = tool_calls.parse_calls(text, tool_names) if tool_names else (text, [])
        return chat_response(body.model, text, finish_reason, prompt_tokens, completion_tokens,
                             calls, thought)

    return app


async def _sse(job, model: str, chat: bool, include_usage: bool):
    """Server-sent events: ``data: {chunk}`` per text delta, the finish reason, then
    ``data: [DONE]``. The job is cancelled if the client disconnects."""
    response_id, created = new_id("chatcmpl" if chat else "cmpl"), int(time.time())

    def chunk(text=None, finish_reason=None, role=False, **extra):
        if chat:
            delta = {"role": "assistant", "content": ""} if role else \
                ({} if text is None else {"content": text})
            body = chat_chunk(response_id, created, model, delta, finish_reason, **extra)
        else:
            body = completion_chunk(response_id, created, model, text or "", finish_reason,
                                    **extra)
        return body

    try:
        if chat:
            yield _data(chunk(role=True))
        async for event in job.events():
            if event[0] == "text":
                yield _data(chunk(event[1]))
            elif event[0] == "error":
                yield _data(error_body(event[1], kind="server_error"))
            else:
                _, finish_reason, prompt_tokens, completion_tokens = event
                yield _data(chunk(finish_reason=finish_reason))
                if include_usage:
                    yield _data({**chunk(with_choice=False),
                                 "usage": usage(prompt_tokens, completion_tokens)})
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()


def _data(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tunelab"}


def _max_new_tokens(body: SamplingRequest, prompt_tokens: int, max_context: int | None,
                    limit: int) -> int:
    requested = body.token_limit()
    param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) \
        else "max_tokens"
    if requested is not None and requested > limit:
        raise ApiError(400, f"{param}: {requested} is above this server's limit of {limit}",
                       param=param, code="max_tokens_too_large")
    room = limit if max_context is None else max_context - prompt_tokens
    if room < 1 or (requested is not None and requested > room):
        raise ApiError(400, f"the prompt ({prompt_tokens} tokens) plus {param} "
                       f"({requested or 1}) exceeds the model's context of {max_context} tokens",
                       param="messages" if hasattr(body, "messages") else "prompt",
                       code="context_length_exceeded")
    return min(requested or limit, room)


def key_matches(request, api_key: str) -> bool:
    """Whether the request sends ``api_key`` as 'Authorization: Bearer KEY'."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                              api_key.encode())


def _validation_error(errors) -> ApiError:
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return ApiError(400, f"The request body is not valid JSON: {detail}".rstrip(": "),
                        code="invalid_json")
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(where) or None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    code = first.get("type")
    if code == "extra_forbidden":  # a field the schemas do not declare; OpenAI's code for it
        message, code = "not supported by this server (refused rather than ignored)", \
            "unsupported_parameter"
    if not param:  # the body as a whole: not an object, or not sent as JSON
        message = f"request body: {message} (send a JSON object, Content-Type: application/json)"
    return ApiError(400, f"{param}: {message}" if param else message, param=param, code=code)


def _error_response(err: ApiError):
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status)


def start_in_thread(app, host: str = DEFAULT_HOST, timeout: float = 60):
    """Serve ``app`` with uvicorn on a free port in a daemon thread (tests, load
    runs): (base url, stop function)."""
    import socket
    import threading

    import uvicorn

    listener = socket.socket()
    listener.bind((host, 0))  # bound here and handed over: no race for the port
    port = listener.getsockname()[1]
    # log_config=None: leave the host process's logging as it is (uvicorn's own setup would
    # replace its handlers, pytest's capture among them).
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [listener]}, daemon=True,
                              name="tunelab-uvicorn")
    thread.start()
    deadline = time.monotonic() + timeout
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.05)

    def stop():
        uv.should_exit = True
        thread.join(timeout=30)
        listener.close()

    return f"http://{host}:{port}", stop


# --- the `tunelab serve` command ------------------------------------------------------

def resolve_api_key(api_key: str | None) -> str | None:
    """The key to require: ``--api-key``, else $TUNELAB_API_KEY, else none."""
    return api_key or os.environ.get(API_KEY_ENV) or None


def binding_refusal(host: str, api_key: str | None, allow_no_key: bool,
                    served: str = "the model") -> str | None:
    """Why a server must not start on ``host``: one that other machines can reach needs an
    API key (``api_key`` as resolve_api_key gives it), unless ``allow_no_key``; None when
    it may start. `tunelab serve` and `tunelab ui` both refuse by this rule."""
    if api_key or is_loopback(host) or allow_no_key:
        return None
    return (f"--host {host}: not this machine only, and no API key is set: anyone who reaches "
            f"the port could use {served} (set ${API_KEY_ENV} or --api-key, or pass "
            "--allow-no-key)")


def check_sources(base: Path, adapters: list[tuple[str, Path]], base_name: str) -> dict:
    """{name: adapter folder}, or a one-line ModelSourceError before anything loads."""
    from tunelab.errors import ModelSourceError

    if not (Path(base) / "config.json").is_file():
        raise ModelSourceError(f"--base {base}: not a model folder (no config.json); "
                               "run `dvc repro base` or pass --base DIR")
    named: dict[str, Path] = {}
    for name, folder in adapters:
        if name == base_name or name in named:
            raise ModelSourceError(f"--adapter {name}={folder}: the name '{name}' is already "
                                   "taken" + (" by the base (--base-name)" if name == base_name
                                              else ""))
        if not (folder / "adapter_config.json").is_file():
            kind = "a full model folder; serve it with --base" if \
                (folder / "config.json").is_file() else "not an adapter folder"
            raise ModelSourceError(f"--adapter {name}={folder}: {kind} "
                                   "(no adapter_config.json)")
        named[name] = folder
    return named


def check_gguf_sources(gguf: list[tuple[str, Path]], base: Path | None = None,
                       adapters: list[tuple[str, Path]] = (), context: int | None = None) -> dict:
    """{name: GGUF file}, or a one-line error before anything loads. ``base`` and
    ``adapters`` must be absent: llama.cpp serves whole GGUF models only."""
    from tunelab.errors import DeployError, ModelSourceError

    if not gguf:
        if context is not None:
            raise ModelSourceError("--context is llama.cpp's KV cache: it needs --gguf (a "
                                   "transformers model's context is its max_position_embeddings)")
        return {}
    if adapters:
        raise ModelSourceError("--adapter cannot be combined with --gguf: serve each adapter as "
                               "a GGUF model instead (`dvc repro export` writes "
                               "models/gguf/tuned-TYPE.gguf), e.g. --gguf tuned=FILE")
    if base is not None:
        raise ModelSourceError("--base cannot be combined with --gguf: give the base as a GGUF "
                               "file too, e.g. --gguf base=FILE")
    named: dict[str, Path] = {}
    for name, path in gguf:
        if name in named:
            raise ModelSourceError(f"--gguf {name}={path}: the name '{name}' is already taken")
        if not path.is_file():
            raise DeployError(f"--gguf {name}={path}: " + (
                "a folder, not a GGUF file" if path.is_dir() else "file not found"))
        named[name] = path
    return named


def load_engine(base: Path | None, adapters: list[tuple[str, Path]], base_name: str = "base",
                gguf: list[tuple[str, Path]] = (), context: int | None = None,
                threads: int | None = None, on_progress=lambda line: None):
    """Check every source in one line, then load: the GGUF files with llama.cpp when
    ``gguf`` is given, else ``base`` (default models/base) and its adapters."""
    files = check_gguf_sources(gguf, base, adapters, context)
    if files:
        from tunelab.serve import gguf_engine

        return gguf_engine.load(files, context=context or DEFAULT_CONTEXT, threads=threads,
                                on_progress=on_progress)
    base = Path(base or DEFAULT_BASE)
    named = check_sources(base, adapters, base_name)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from tunelab.serve import engine

    return engine.load(base, named, base_name, on_progress=on_progress)


def serve(base: Path | None, adapters: list[tuple[str, Path]], base_name: str = "base",
          host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
          max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT, threads: int | None = None,
          gguf: list[tuple[str, Path]] = (), context: int | None = None) -> int:
    """Check the sources, load the models and serve them until stopped."""
    import uvicorn

    loaded = load_engine(base, adapters, base_name, gguf, context, threads,
                         on_progress=lambda line: print(line, file=sys.stderr))
    api_key = resolve_api_key(api_key)
    if not api_key and not is_loopback(host):  # only with --allow-no-key (tunelab.cli.serve)
        print(f"warning: serving on {host} without an API key: anyone who can reach this "
              f"port can use the model (set {API_KEY_ENV} or --api-key)", file=sys.stderr)
    app = create_app(loaded, api_key=api_key, max_tokens_limit=max_tokens_limit)
    print(f"serving {', '.join(loaded.names)} on http://{host}:{port}/v1"
          + (" (API key required)" if api_key else ""), file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        loaded.close()
    return 0


def parse_adapter_spec(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` (``--adapter``) as (name, folder); ValueError when it is not one."""
    return _parse_spec(text, "DIR")


def parse_gguf_spec(text: str) -> tuple[str, Path]:
    """``NAME=FILE`` (``--gguf``) as (name, file); ValueError when it is not one."""
    return _parse_spec(text, "FILE")


def _parse_spec(text: str, what: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not path or not MODEL_NAME.match(name):
        raise ValueError(f"expected NAME={what} (NAME of letters, digits, . _ : -), got {text!r}")
    return name, Path(path)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
