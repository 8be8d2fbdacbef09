"""`tunelab serve --gguf` against the official `openai` client: a real uvicorn server in a
background thread serving one tiny f32 GGUF (made from the tiny random Llama) under two
names with llama.cpp. Its answers are noise, so the tests check what must hold of any
model: the server's greedy answer is llama_runtime's, streamed text joins to the whole
one, and grammar-constrained answers parse as JSON of the asked shape."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tunelab.deploy.llama_runtime import DEFAULT_CONTEXT
from tunelab.serve import server

API_KEY = "gguf-key-456"
LIMIT = 64       # the server's max_tokens limit
CONTEXT = 256    # llama.cpp KV-cache tokens per model
CHAT = [{"role": "user", "content": "What color is the sky?"}]
PROMPT = "The sky is"
JSON_CHAT = [{"role": "user", "content": "JSON"}]  # a prompt whose JSON answer ends in time
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ok", "n", "name"],
          "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"},
                         "name": {"type": "string", "maxLength": 8}}}


@pytest.fixture(scope="module")
def gguf_file(tiny_base_dir, tmp_path_factory):
    from tunelab.deploy import gguf_export

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    gguf_export.convert_model(tiny_base_dir, path, "tiny")
    return path


@pytest.fixture(scope="module")
def engine(gguf_file):
    from tunelab.serve import gguf_engine

    loaded = gguf_engine.load({"base": gguf_file, "tuned": gguf_file}, context=CONTEXT,
                              threads=1)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def base_url(engine):
    url, stop = server.start_in_thread(
        server.create_app(engine, api_key=API_KEY, max_tokens_limit=LIMIT))
    yield url
    stop()


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def direct(gguf_file):
    """The same file loaded apart from the server: what llama_runtime itself generates."""
    from tunelab.deploy import llama_runtime

    llm = llama_runtime.load(gguf_file, context=CONTEXT, threads=1)
    yield llm
    llm.close()


def chat(client, model="base", max_tokens=8, messages=CHAT, **kwargs):
    return client.chat.completions.create(model=model, messages=messages,
                                          max_tokens=max_tokens, temperature=0, **kwargs)


def _post(base_url, path, body):
    return httpx.post(f"{base_url}{path}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"})


def test_models_lists_both_names_and_health_needs_no_key(client, base_url):
    assert [m.id for m in client.models.list()] == ["base", "tuned"]
    assert client.models.retrieve("tuned").id == "tuned"
    assert httpx.get(f"{base_url}/health").json() == {"status": "ok"}


def test_greedy_chat_is_llama_runtimes_answer_with_its_token_counts(client, direct):
    from tunelab.deploy import llama_runtime

    prompt = llama_runtime.chat_prompt_tokens(direct, CHAT)
    expected = llama_runtime.generate(direct, prompt, 8)
    for model in ("base", "tuned"):  # one file under two names: the same answer
        response = chat(client, model=model)
        assert response.model == model and response.object == "chat.completion"
        assert response.choices[0].message.content == llama_runtime.decode(direct,
                                                                            expected.token_ids)
        assert response.choices[0].message.content.strip() == expected.text
        ended = llama_runtime.is_end_of_generation(direct, expected.token_ids[-1])
        assert response.choices[0].finish_reason == ("stop" if ended else "length")
        assert (response.usage.prompt_tokens, response.usage.completion_tokens,
                response.usage.total_tokens) == (len(prompt), len(expected.token_ids),
                                                 len(prompt) + len(expected.token_ids))


def test_completion_takes_raw_text_and_streams_the_same(client, direct):
    from tunelab.deploy import llama_runtime

    prompt = llama_runtime.text_tokens(direct, PROMPT)
    expected = llama_runtime.generate(direct, prompt, 5)
    response = client.completions.create(model="tuned", prompt=PROMPT, max_tokens=5,
                                         temperature=0)
    assert response.object == "text_completion"
    assert response.choices[0].text == llama_runtime.decode(direct, expected.token_ids)
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == \
        (len(prompt), len(expected.token_ids))
    streamed = client.completions.create(model="tuned", prompt=PROMPT, max_tokens=5,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == response.choices[0].text


def test_streamed_chat_sends_the_same_answer_in_chunks_then_usage(client):
    whole = chat(client, max_tokens=12)
    chunks = list(chat(client, max_tokens=12, stream=True,
                       stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choice = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in with_choice) == \
        whole.choices[0].message.content
    assert len(with_choice) > 3  # token by token, not one blob
    assert with_choice[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_stop_sequence_cuts_the_answer_before_it(client):
    text = client.completions.create(model="base", prompt=PROMPT, max_tokens=12,
                                     temperature=0).choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert len(stop) == 2, text
    for stream in (False, True):
        answer = client.completions.create(model="base", prompt=PROMPT, max_tokens=12,
                                           temperature=0, stop=[stop, "never-XYZ"],
                                           stream=stream)
        if stream:
            assert "".join(c.choices[0].text for c in answer) == text[:text.index(stop)]
        else:
            assert answer.choices[0].text == text[:text.index(stop)]
            assert answer.choices[0].finish_reason == "stop"


def test_sampling_repeats_with_a_seed_and_varies_without(client):
    def sample(seed=None):
        return client.completions.create(model="tuned", prompt=PROMPT, max_tokens=8,
                                         temperature=1.5, top_p=0.95, seed=seed).choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in (1, 2, 3)}) > 1
    assert len({sample() for _ in range(3)}) > 1


def test_unknown_model_is_404_naming_the_served_ones(client):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, model="gamma")
    assert caught.value.body == {"message": "The model 'gamma' does not exist; this server has: "
                                 "base, tuned", "type": "invalid_request_error",
                                 "param": "model", "code": "model_not_found"}


def test_missing_or_wrong_api_key_is_401(base_url):
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.code == "invalid_api_key"
    assert httpx.get(f"{base_url}/v1/models").status_code == 401


def test_prompt_beyond_the_llama_context_is_400(base_url, direct):
    from tunelab.deploy import llama_runtime

    text = "sky " * 300
    prompt_tokens = len(llama_runtime.text_tokens(direct, text))
    assert prompt_tokens > CONTEXT
    response = _post(base_url, "/v1/completions", {"model": "base", "prompt": text})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"the prompt ({prompt_tokens} tokens) plus max_tokens (1) exceeds the "
                   f"model's context of {CONTEXT} tokens",
        "type": "invalid_request_error", "param": "prompt", "code": "context_length_exceeded"}


@pytest.mark.parametrize("response_format", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "anything"}},  # no schema: any object
])
def test_json_object_answers_parse_as_a_json_object(client, response_format):
    plain = chat(client, messages=JSON_CHAT, max_tokens=LIMIT).choices[0].message.content
    with pytest.raises(json.JSONDecodeError):  # unconstrained, this model writes no JSON
        json.loads(plain)
    answer = chat(client, messages=JSON_CHAT, max_tokens=LIMIT, response_format=response_format)
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_json_schema_answers_match_the_schema_every_time(client):
    response_format = {"type": "json_schema",
                       "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True}}
    answers = [chat(client, model=model, max_tokens=LIMIT, response_format=response_format)
               for model in ("base", "tuned", "base")]
    texts = [a.choices[0].message.content for a in answers]
    assert texts[0] == texts[1] == texts[2]  # no grammar state carried between requests
    reply = json.loads(texts[0])
    assert set(reply) == {"ok", "n", "name"}
    assert isinstance(reply["ok"], bool) and type(reply["n"]) is int
    assert isinstance(reply["name"], str) and len(reply["name"]) <= 8
    streamed = chat(client, max_tokens=LIMIT, response_format=response_format, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == texts[0]


@pytest.mark.parametrize("schema, reason", [
    ({"type": "nonsense"}, "llama.cpp cannot turn this JSON schema into a grammar: "
                           "AssertionError: Unrecognized schema: {'type': 'nonsense'}"),
    ({"enum": []}, "the grammar made from this JSON schema does not parse in llama.cpp"),
])
def test_a_schema_llama_cpp_cannot_use_is_400(base_url, schema, reason):
    response = _post(base_url, "/v1/chat/completions", {
        "model": "base", "messages": CHAT,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"response_format.json_schema.schema: {reason}",
        "type": "invalid_request_error", "param": "response_format.json_schema.schema",
        "code": "invalid_json_schema"}


def test_tools_render_as_training_renders_them(client, direct, tiny_base_dir):
    """SmolLM2's template has no tool support: llama.cpp's prompt is the fallback that
    training writes, token for token, and a request with tools is served with it."""
    from transformers import AutoTokenizer

    from tunelab.data import encoding
    from tunelab.deploy import llama_runtime

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    prompt = llama_runtime.chat_prompt_tokens(direct, CHAT, tools)
    trained = encoding.chat_ids(AutoTokenizer.from_pretrained(tiny_base_dir), CHAT,
                                add_generation_prompt=True, tools=tools)
    assert prompt == trained and llama_runtime.decode(direct, prompt).count("get_weather") == 1
    response = chat(client, max_tokens=2, tools=tools)
    assert response.usage.prompt_tokens == len(prompt)


@pytest.mark.parametrize("field, value", [("tool_choice", "required"),
                                          ("logit_bias", {"1": 5}), ("presence_penalty", 1.0),
                                          ("top_logprobs", 1)])
def test_fields_llama_cpp_is_not_asked_for_are_400(client, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, extra_body={field: value})
    assert caught.value.param == field
    assert caught.value.body["message"].startswith(f"{field}: ")


def test_concurrent_clients_on_both_models_get_their_answers(client):
    """Both models' workers busy at once, plain and grammar requests mixed, streamed or not."""
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}
    kinds = {"plain": {}, "json": {"response_format": response_format}}
    expected = {kind: chat(client, max_tokens=LIMIT, **extra).choices[0].message.content
                for kind, extra in kinds.items()}

    def one_client(index):
        results = []
        for step in range(4):
            model, kind = ("base", "tuned")[(index + step) % 2], ("plain", "json")[step % 2]
            if index % 2:
                text = "".join(c.choices[0].delta.content or "" for c in
                               chat(client, model=model, max_tokens=LIMIT, stream=True,
                                    **kinds[kind]) if c.choices)
            else:
                text = chat(client, model=model, max_tokens=LIMIT,
                            **kinds[kind]).choices[0].message.content
            results.append((kind, text))
        return results

    with ThreadPoolExecutor(6) as pool:
        results = [r for batch in pool.map(one_client, range(6)) for r in batch]
    assert len(results) == 24
    assert all(text == expected[kind] for kind, text in results), results


def test_too_many_pending_requests_are_429(gguf_file):
    from tunelab.deploy import llama_runtime
    from tunelab.serve import gguf_engine

    busy = gguf_engine.GgufEngine({"base": llama_runtime.load(gguf_file, context=CONTEXT,
                                                              threads=1)}, max_pending=0)
    url, stop = server.start_in_thread(server.create_app(busy))
    try:
        response = httpx.post(f"{url}/v1/completions", json={"model": "base", "prompt": "x"})
    finally:
        stop()
        busy.close()
    assert response.status_code == 429
    assert response.json()["error"] == {"message": "server busy: 0 requests queued",
                                        "type": "rate_limit_error", "param": None,
                                        "code": "server_busy"}


# --- the command line -----------------------------------------------------------------

def test_serve_parses_gguf_and_context_flags():
    from tunelab.cli import serve as serve_cli

    parser = argparse.ArgumentParser()
    serve_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--gguf", "base=a.gguf", "--gguf", "tuned=b/c.gguf",
                              "--context", "4096"])
    assert [(name, str(path)) for name, path in args.gguf] == [("base", "a.gguf"),
                                                               ("tuned", "b/c.gguf")]
    assert (args.context, args.base, args.host) == (4096, None, "127.0.0.1")
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--gguf", "no-equals-sign"])


def test_serve_command_serves_gguf_files_with_llama_cpp(gguf_file, monkeypatch, capsys):
    import uvicorn

    from tunelab.cli import app as cli
    from tunelab.serve.gguf_engine import GgufEngine

    seen = {}

    def fake_run(app, host, port, log_level):  # what `tunelab serve` would serve, not served
        engine = app.state.engine
        seen.update(kind=type(engine), names=engine.names, context=engine.max_context,
                    where=(host, port))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.delenv(server.API_KEY_ENV, raising=False)
    assert cli.main(["serve", "--gguf", f"base={gguf_file}", "--gguf", f"tuned={gguf_file}",
                     "--context", "512", "--threads", "1", "--port", "8123"]) == 0
    assert seen == {"kind": GgufEngine, "names": ["base", "tuned"], "context": 512,
                    "where": ("127.0.0.1", 8123)}
    assert capsys.readouterr().err.splitlines()[-1] == \
        "serving base, tuned on http://127.0.0.1:8123/v1"


def test_serve_rejects_bad_gguf_sources_in_one_line(gguf_file, tiny_base_dir, tmp_path, capsys):
    from tunelab.cli import app as cli

    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    cases = [
        (["--gguf", f"a={tmp_path / 'missing.gguf'}"],
         f"--gguf a={tmp_path / 'missing.gguf'}: file not found"),
        (["--gguf", f"a={tmp_path}"], f"--gguf a={tmp_path}: a folder, not a GGUF file"),
        (["--gguf", f"a={gguf_file}", "--gguf", f"a={gguf_file}"],
         f"--gguf a={gguf_file}: the name 'a' is already taken"),
        (["--gguf", f"a={gguf_file}", "--adapter", f"x={tmp_path}"],
         "--adapter cannot be combined with --gguf: serve each adapter as a GGUF model instead "
         "(`dvc repro export` writes models/gguf/tuned-TYPE.gguf), e.g. --gguf tuned=FILE"),
        (["--gguf", f"a={gguf_file}", "--base", str(tiny_base_dir)],
         "--base cannot be combined with --gguf: give the base as a GGUF file too, "
         "e.g. --gguf base=FILE"),
        (["--base", str(tiny_base_dir), "--context", "512"],
         "--context is llama.cpp's KV cache: it needs --gguf (a transformers model's context "
         "is its max_position_embeddings)"),
    ]
    for flags, message in cases:
        assert cli.main(["serve", *flags]) == 1
        assert capsys.readouterr().err == f"tunelab serve: error: {message}\n"
    assert cli.main(["serve", "--gguf", f"a={not_gguf}"]) == 1
    assert capsys.readouterr().err == (
        f"loading {not_gguf} as 'a' (llama.cpp, {DEFAULT_CONTEXT} tokens of context)\n"
        f"tunelab serve: error: {not_gguf}: llama.cpp cannot load this GGUF file "
        f"(Failed to load model from file: {not_gguf})\n")


def test_bench_serve_loads_gguf_models_itself(gguf_file, tmp_path):
    from tunelab.cli import main

    out = tmp_path / "load.json"
    specs = [f"base={gguf_file}", f"tuned={gguf_file}"]
    status = main(["bench-serve", "--gguf", specs[0], "--gguf", specs[1], "--context",
                   str(CONTEXT), "--clients", "2", "--requests", "10", "--max-tokens", "2",
                   "--output", str(out)])
    result = json.loads(out.read_text())
    assert status == 0, result["failures"]
    assert result["models"] == ["base", "tuned"]
    assert (result["config"]["gguf"], result["config"]["context"], result["config"]["base"]) \
        == (specs, CONTEXT, None)
    # Each client's 10th request is a bad one: turn 9 a wrong key, turn 19 max_tokens 10^6.
    assert result["status_counts"] == {"200": 18, "400": 1, "401": 1}
    assert 0 < result["completion_tokens"] <= 18 * 2
