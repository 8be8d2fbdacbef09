"""`tunelab serve` against the official `openai` client: a real uvicorn server in a
background thread, serving the tiny random Llama and two tiny LoRA adapters."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tunelab.serve import server

API_KEY = "test-key-123"
LIMIT = 32  # the server's max_tokens limit
ADAPTERS = {"alpha": 1, "beta": 2}  # name -> seed of its random LoRA weights
CHAT = [{"role": "user", "content": "What color is the sky?"}]
PROMPT = "The sky is"


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base_dir, tmp_path_factory):
    """Two random (not identity) LoRA adapters, so their answers differ from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = {}
    for name, seed in ADAPTERS.items():
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
        config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        folders[name] = tmp_path_factory.mktemp(f"adapter_{name}")
        get_peft_model(base, config).save_pretrained(folders[name])
    return folders


@pytest.fixture(scope="module")
def base_url(tiny_base_dir, adapter_dirs):
    from tunelab.serve import engine

    engine = engine.load(tiny_base_dir, adapter_dirs)
    url, stop = server.start_in_thread(
        server.create_app(engine, api_key=API_KEY, max_tokens_limit=LIMIT))
    yield url
    stop()
    engine.close()


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def direct(tiny_base_dir):
    """Greedy answers computed without the server: ids -> (text, new token ids)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir).eval()

    def run(prompt_ids: list[int], max_new_tokens: int):
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
        new = out[0, len(prompt_ids):].tolist()
        return tokenizer.decode(new, skip_special_tokens=True), new

    return tokenizer, run


def chat(client, model="base", max_tokens=6, **kwargs):
    return client.chat.completions.create(model=model, messages=CHAT, max_tokens=max_tokens,
                                          temperature=0, **kwargs)


def test_models_lists_base_and_adapters_and_health_needs_no_key(client, base_url):
    assert [m.id for m in client.models.list()] == ["base", "alpha", "beta"]
    assert client.models.retrieve("alpha").id == "alpha"
    health = httpx.get(f"{base_url}/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


def test_chat_completion_equals_direct_greedy_generation_and_usage_counts(client, direct):
    tokenizer, run = direct
    prompt_ids = list(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True,
                                                    tokenize=True)["input_ids"])
    expected_text, new_ids = run(prompt_ids, 6)
    response = chat(client)
    assert response.object == "chat.completion" and response.model == "base"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == expected_text
    assert response.choices[0].finish_reason == \
        ("stop" if tokenizer.eos_token_id in new_ids else "length")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens,
            response.usage.total_tokens) == (len(prompt_ids), len(new_ids),
                                             len(prompt_ids) + len(new_ids))


def test_streamed_chat_sends_the_same_answer_in_chunks(client):
    whole = chat(client, model="alpha")
    chunks = list(chat(client, model="alpha", stream=True,
                       stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choice = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choice)
    assert text == whole.choices[0].message.content
    assert len(with_choice) > 3  # one chunk per token, not one blob
    assert with_choice[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert [c.choices[0].finish_reason for c in with_choice[:-1]] == [None] * (len(with_choice) - 1)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completion_takes_raw_prompt_text(client, direct):
    tokenizer, run = direct
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    response = client.completions.create(model="base", prompt=PROMPT, max_tokens=5, temperature=0)
    expected_text, new_ids = run(prompt_ids, 5)
    assert response.object == "text_completion"
    assert response.choices[0].text == expected_text
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == \
        (len(prompt_ids), len(new_ids))
    streamed = client.completions.create(model="base", prompt=PROMPT, max_tokens=5,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected_text


def test_model_field_chooses_the_adapter(client):
    answers = {name: chat(client, model=name, max_tokens=8).choices[0].message.content
               for name in ("base", "alpha", "beta", "base")}
    assert len({answers["base"], answers["alpha"], answers["beta"]}) == 3, answers
    assert chat(client, model="alpha", max_tokens=8).choices[0].message.content == answers["alpha"]


def test_stop_sequence_cuts_the_answer_before_it(client):
    full = client.completions.create(model="beta", prompt=PROMPT, max_tokens=12, temperature=0)
    text = full.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert len(stop) == 2, text
    cut = client.completions.create(model="beta", prompt=PROMPT, max_tokens=12, temperature=0,
                                    stop=[stop, "never-seen-XYZ"])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="beta", prompt=PROMPT, max_tokens=12,
                                         temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text[:text.index(stop)]


def test_sampling_with_a_seed_repeats(client):
    def sample(seed):
        return client.completions.create(model="alpha", prompt=PROMPT, max_tokens=8,
                                         temperature=1.5, top_p=0.95, seed=seed).choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in (1, 2, 3)}) > 1


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, model="gamma")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "gamma" in caught.value.message and "alpha" in caught.value.message


def test_missing_or_wrong_api_key_is_401(base_url):
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.code == "invalid_api_key"
    missing = httpx.post(f"{base_url}/v1/chat/completions", content=b"{not json")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"


def _post(base_url, path, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{base_url}{path}", content=content, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}",
                               "Content-Type": "application/json"})


@pytest.mark.parametrize("path, body, param, message", [
    ("/v1/chat/completions", b'{"model": "base", "messages": [', None, "not valid JSON"),
    ("/v1/chat/completions", {"model": "base", "messages": CHAT, "temperature": -0.5},
     "temperature", "greater than or equal to 0"),
    ("/v1/completions", {"model": "base", "prompt": "x", "max_tokens": 100000},
     "max_tokens", "above this server's limit of 32"),
    ("/v1/chat/completions", {"model": "base"}, "messages", "Field required"),
    ("/v1/chat/completions", {"model": "base", "messages": CHAT, "n": 2}, "n", "only n=1"),
    ("/v1/chat/completions", {"model": "base", "messages": [{"role": "robot", "content": "x"}]},
     "messages.0.role", "Input should be"),
    ("/v1/completions", {"model": "base", "prompt": "x", "logprobs": 2}, "logprobs",
     "not supported"),
    ("/v1/completions", [1, 2], None, "request body: Input should be a valid dictionary"),
])
def test_bad_requests_are_400_with_openai_error_body(base_url, path, body, param, message):
    response = _post(base_url, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert message in error["message"]


# Fields the server does not honour: each a 400 naming it, never silently dropped.
UNDECLARED = "not supported by this server (refused rather than ignored)"
REFUSED = [
    ("tool_choice", "required",  # tools themselves are served: tests/test_tool_calls.py
     "only 'auto' and 'none' are supported by this server, got \"required\""),
    ("functions", [{"name": "f"}], UNDECLARED),
    ("function_call", "auto", UNDECLARED),
    ("logit_bias", {"50256": -100}, UNDECLARED),
    ("top_logprobs", 2, UNDECLARED),
    ("parallel_tool_calls", False, UNDECLARED),
    ("audio", {"voice": "alloy", "format": "wav"}, UNDECLARED),
    ("modalities", ["text"], UNDECLARED),
    ("prediction", {"type": "content", "content": "x"}, UNDECLARED),
    ("metadata", {"run": "1"}, UNDECLARED),
    ("temprature", 0.5, UNDECLARED),  # a typo is refused too
    ("presence_penalty", 0.5, "only 0 is supported by this server (it applies no penalties)"),
    ("frequency_penalty", -1, "only 0 is supported by this server (it applies no penalties)"),
    ("store", True, "this server stores no completions; send false or leave it out"),
]


@pytest.mark.parametrize("field, value, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_fields_the_server_does_not_honour_are_400_naming_them(client, field, value, message):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, extra_body={field: value})
    assert caught.value.status_code == 400 and caught.value.param == field
    assert caught.value.body["message"] == f"{field}: {message}"


@pytest.mark.parametrize("field, value", [("echo", True), ("best_of", 2), ("suffix", "x")])
def test_completion_only_fields_are_refused_too(base_url, field, value):
    response = _post(base_url, "/v1/completions",
                     {"model": "base", "prompt": "x", "max_tokens": 1, field: value})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"{field}: {UNDECLARED}",
        "type": "invalid_request_error", "param": field, "code": "unsupported_parameter"}


def test_a_field_inside_a_message_is_refused_with_its_path(base_url):
    response = _post(base_url, "/v1/chat/completions",
                     {"model": "base", "max_tokens": 1,
                      "messages": [{"role": "user", "content": "hi", "name": "ann"}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.name"


def test_neutral_values_and_outputless_fields_are_accepted(client):
    plain = chat(client).choices[0].message.content
    same = chat(client, presence_penalty=0, frequency_penalty=0, n=1, logprobs=False,
                store=False, user="ticket-42", response_format={"type": "text"},
                stream_options={"include_usage": None},  # null asks for nothing
                extra_body={"tools": None, "logit_bias": None})
    assert same.choices[0].message.content == plain


def test_an_answer_sent_back_as_a_message_is_accepted(client):
    """The client's own message object carries null refusal, tool_calls, ...: not refused."""
    answer = chat(client).choices[0].message
    follow_up = client.chat.completions.create(
        model="base", messages=[*CHAT, answer, {"role": "user", "content": "Why?"}],
        max_tokens=2, temperature=0)
    assert follow_up.usage.prompt_tokens > chat(client).usage.prompt_tokens


@pytest.mark.parametrize("response_format", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
])
def test_json_response_formats_are_for_gguf_models_only(client, response_format):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, response_format=response_format)
    assert caught.value.param == "response_format"
    assert caught.value.body["message"] == (f"response_format: {response_format['type']} is "
                                            "supported for GGUF models only "
                                            "(`tunelab serve --gguf NAME=FILE`)")


@pytest.mark.parametrize("response_format, param, message", [
    ({"type": "json_schema"}, "response_format", "type json_schema needs the json_schema "
                                                 'object ({"name": ..., "schema": {...}})'),
    ({"type": "text", "json_schema": {"name": "a"}}, "response_format",
     "json_schema is given, but type is 'text'"),
    ({"type": "xml"}, "response_format.type",
     "Input should be 'text', 'json_object' or 'json_schema'"),
    ({"type": "json_schema", "json_schema": {"name": "a", "description": "d"}},
     "response_format.json_schema.description", UNDECLARED),
])
def test_malformed_response_format_is_400(base_url, response_format, param, message):
    response = _post(base_url, "/v1/chat/completions", {"model": "base", "messages": CHAT,
                                                        "response_format": response_format})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["message"]) == (param, f"{param}: {message}")


TOO_LARGE = {"error": {"message": f"request body over {server.MAX_BODY_BYTES} bytes",
                       "type": "invalid_request_error", "param": None,
                       "code": "request_too_large"}}


def test_oversized_body_is_413_before_parsing(base_url):
    response = _post(base_url, "/v1/completions", b"x" * (server.MAX_BODY_BYTES + 1))
    assert (response.status_code, response.json()) == (413, TOO_LARGE)


def test_chunked_body_is_counted_as_it_arrives(base_url):
    """No Content-Length to refuse (httpx sends a generator body chunked): the bytes that
    arrive are counted, and one past the limit is the same 413."""
    def chunked(*parts: bytes):
        yield from parts

    def post(parts, key=API_KEY):
        return httpx.post(f"{base_url}/v1/completions", content=chunked(*parts), timeout=60,
                          headers={"Authorization": f"Bearer {key}",
                                   "Content-Type": "application/json"})

    block = b"x" * (64 * 1024)
    too_large = [block] * (server.MAX_BODY_BYTES // len(block)) + [b"x"]
    response = post(too_large)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    assert post(too_large, key="wrong").status_code == 401  # the key is checked first
    request = json.dumps({"model": "base", "prompt": PROMPT, "max_tokens": 2,
                          "temperature": 0}).encode()
    answer = post([request[:10], request[10:]])  # a chunked request under the limit is served
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 2


def test_openai_client_sees_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, max_tokens=LIMIT + 1)
    assert caught.value.param == "max_tokens"


def test_concurrent_clients_get_their_own_models_answers(client):
    """8 clients x 5 requests mixing models and streaming: adapters switched on one
    shared model must not leak between interleaved requests."""
    expected = {name: chat(client, model=name, max_tokens=4).choices[0].message.content
                for name in ("base", "alpha", "beta")}

    def one_client(index):
        results = []
        for step in range(5):
            name = ("base", "alpha", "beta")[(index + step) % 3]
            if (index + step) % 2:
                text = "".join(c.choices[0].delta.content or "" for c in
                               chat(client, model=name, max_tokens=4, stream=True) if c.choices)
            else:
                text = chat(client, model=name, max_tokens=4).choices[0].message.content
            results.append((name, text))
        return results

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(one_client, range(8)) for r in batch]
    assert len(results) == 40
    assert all(text == expected[name] for name, text in results), results


def test_serve_defaults_to_localhost_and_reads_key_from_env(monkeypatch):
    from tunelab.cli import serve as serve_cli

    parser = argparse.ArgumentParser()
    serve_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--adapter", "a=x/y", "--adapter", "b=z"])
    assert (args.host, args.port, args.base_name) == ("127.0.0.1", 8000, "base")
    assert [(name, str(path)) for name, path in args.adapter] == [("a", "x/y"), ("b", "z")]
    monkeypatch.delenv(server.API_KEY_ENV, raising=False)
    assert server.resolve_api_key(args.api_key) is None
    monkeypatch.setenv(server.API_KEY_ENV, "from-env")
    assert server.resolve_api_key(args.api_key) == "from-env"
    assert server.resolve_api_key(parser.parse_args(["serve", "--api-key", "flag"]).api_key) \
        == "flag"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--adapter", "no-equals-sign"])


def test_serve_on_an_open_host_needs_a_key_or_allow_no_key(monkeypatch, capsys):
    import types

    import uvicorn

    from tunelab.cli import app as cli

    served = []
    monkeypatch.setattr(server, "load_engine", lambda *args, **kwargs: types.SimpleNamespace(
        names=["base"], close=lambda: None))
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: served.append(host))
    monkeypatch.delenv(server.API_KEY_ENV, raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert capsys.readouterr().err == (
        "tunelab serve: error: --host 0.0.0.0: not this machine only, and no API key is set: "
        f"anyone who reaches the port could use the model (set ${server.API_KEY_ENV} or "
        "--api-key, or pass --allow-no-key)\n")
    assert served == []  # refused before anything loaded

    assert cli.main(["serve", "--host", "0.0.0.0", "--allow-no-key"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: serving on 0.0.0.0 without an API key: anyone who can reach this port can use "
        f"the model (set {server.API_KEY_ENV} or --api-key)",
        "serving base on http://0.0.0.0:8000/v1"]
    assert cli.main(["serve", "--host", "0.0.0.0", "--api-key", "k"]) == 0
    assert cli.main(["serve", "--host", "::1"]) == 0 and cli.main(["serve"]) == 0  # loopback
    monkeypatch.setenv(server.API_KEY_ENV, "from-env")
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == \
        "serving base on http://0.0.0.0:8000/v1 (API key required)"
    assert served == ["0.0.0.0", "0.0.0.0", "::1", "127.0.0.1", "0.0.0.0"]


def test_serve_rejects_bad_folders_before_loading(tiny_base_dir, tmp_path, capsys):
    from tunelab.cli import app as cli

    assert cli.main(["serve", "--base", str(tmp_path / "missing")]) == 1
    assert "missing: not a model folder" in capsys.readouterr().err
    assert cli.main(["serve", "--base", str(tiny_base_dir), "--adapter",
                     f"full={tiny_base_dir}"]) == 1
    assert "a full model folder" in capsys.readouterr().err
    assert cli.main(["serve", "--base", str(tiny_base_dir), "--adapter",
                     f"base={tmp_path}"]) == 1
    assert "'base' is already taken" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--temperature", "-1"), ("--top-p", "0"),
                                         ("--max-new-tokens", "0")])
def test_generate_rejects_bad_sampling_flags(flag, value, capsys):
    from tunelab.cli import app as cli

    with pytest.raises(SystemExit) as caught:
        cli.main(["generate", "--model", "x", "--prompt", "p", flag, value])
    assert caught.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err


@pytest.mark.parametrize("command, module, extra", [
    (["serve", "--base", "missing"], "uvicorn", "serve"),
    (["serve", "--base", "missing"], "fastapi", "serve"),
    (["bench-serve", "--url", "http://127.0.0.1:1", "--output", "out.json"], "httpx", "bench"),
    (["bench-serve", "--base", "missing", "--output", "out.json"], "uvicorn", "serve"),
])
def test_a_missing_extra_is_one_line(command, module, extra, monkeypatch, capsys):
    from tunelab.cli import main

    monkeypatch.setitem(sys.modules, module, None)  # what `import` does when it is not installed
    assert main(command) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"tunelab {command[0]}: error: the {extra} extra is not installed: "
                            f'pip install "tunelab[{extra}]"\n')
    assert captured.out == ""


def load_test(*flags) -> tuple[int, dict]:
    """`tunelab bench-serve FLAGS --output FILE`: its exit status and result file."""
    from tunelab.cli import main

    output = flags[flags.index("--output") + 1]
    return main(["bench-serve", *flags]), json.loads(open(output).read())


def test_bench_serve_checks_every_response_of_a_running_server(base_url, tmp_path, capsys):
    out = tmp_path / "load.json"
    status, result = load_test("--url", base_url, "--api-key", API_KEY, "--clients", "2",
                               "--requests", "10", "--max-tokens", "2", "--output", str(out))
    assert status == 0
    # Each client's 10th request is a bad one: turn 9 sends a wrong key, turn 19 max_tokens 10^6.
    assert result["status_counts"] == {"200": 18, "400": 1, "401": 1}
    assert (result["total"], result["bad_requests_sent"], result["server_errors_5xx"],
            result["malformed"], result["unexpected_status"]) == (20, 2, 0, 0, 0)
    assert result["models"] == ["base", *ADAPTERS]
    assert result["config"] == {"url": base_url, "base": None, "adapters": [], "gguf": [],
                                "context": None}
    assert 0 < result["completion_tokens"] <= 18 * 2 and result["failures"] == []
    stdout = capsys.readouterr().out
    assert stdout.endswith(f"\nwrote {out}\n")
    printed = json.loads(stdout[:-len(f"wrote {out}\n")])
    assert printed == {k: v for k, v in result.items() if k != "failures"}


def test_bench_serve_exits_1_on_unexpected_answers(base_url, tmp_path):
    # max_tokens over the server's limit: every good request gets a 400 instead of its 200.
    status, result = load_test("--url", base_url, "--api-key", API_KEY, "--clients", "1",
                               "--requests", "10", "--max-tokens", str(LIMIT + 1),
                               "--output", str(tmp_path / "load.json"))
    assert status == 1
    assert result["status_counts"] == {"400": 9, "401": 1}
    assert (result["unexpected_status"], result["malformed"], len(result["failures"])) == (9, 0, 9)


def test_bench_serve_starts_its_own_server(tiny_base_dir, adapter_dirs, tmp_path):
    spec = f"alpha={adapter_dirs['alpha']}"
    status, result = load_test("--base", str(tiny_base_dir), "--adapter", spec, "--clients", "1",
                               "--requests", "10", "--max-tokens", "2",
                               "--output", str(tmp_path / "load.json"))
    assert status == 0
    assert result["models"] == ["base", "alpha"]
    assert result["config"]["base"] == str(tiny_base_dir)
    assert result["config"]["adapters"] == [spec]
    assert result["status_counts"] == {"200": 9, "401": 1}  # turn 9: a wrong key


def test_bench_serve_rejects_bad_flags_in_one_line(base_url, tmp_path, capsys):
    from tunelab.cli import main

    out = str(tmp_path / "load.json")
    for flags in (["--output", out], ["--url", base_url, "--base", "x", "--output", out],
                  ["--base", "x", "--gguf", "a=b.gguf", "--output", out]):
        assert main(["bench-serve", *flags]) == 2
        assert capsys.readouterr().err == \
            "tunelab bench-serve: error: give exactly one of --url, --base and --gguf\n"
    assert main(["bench-serve", "--url", base_url, "--context", "64", "--output", out]) == 2
    assert capsys.readouterr().err == ("tunelab bench-serve: error: --adapter and --context "
                                       "configure an own server (--base, --gguf), not one at "
                                       "--url\n")
    assert main(["bench-serve", "--url", base_url, "--api-key", "wrong", "--output", out]) == 1
    assert capsys.readouterr().err == (f"tunelab bench-serve: error: {base_url}/v1/models "
                                       "answered 401: Incorrect or missing API key: send it "
                                       "as 'Authorization: Bearer KEY'\n")
    with pytest.raises(SystemExit) as caught:
        main(["bench-serve", "--url", base_url, "--adapter", "no-equals-sign", "--output", out])
    assert caught.value.code == 2
    assert "argument --adapter: expected NAME=DIR" in capsys.readouterr().err

