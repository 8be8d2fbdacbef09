"""Load test for `tunelab serve`: N concurrent clients x M requests each.

    tunelab bench-serve --url http://127.0.0.1:8000 --api-key KEY --output out.json
    tunelab bench-serve --base models/base --adapter tuned=models/adapter --output out.json
    tunelab bench-serve --gguf base=base.gguf --gguf tuned=models/gguf/tuned-q8_0.gguf \
        --output out.json

With --base or --gguf it starts its own server (in this process, on a free 127.0.0.1
port), loaded as `tunelab serve` loads it (with --gguf: llama.cpp, one worker thread per
model, so clients of different models run at once and those of one model queue).
Requests rotate over every served model and over chat, streamed chat, completion and
streamed completion; every 10th request is a bad one (malformed JSON, oversized
max_tokens, negative temperature, wrong or missing key, unknown model) that must get
its 4xx. Each response is checked for shape (OpenAI JSON, or well-formed server-sent
events ending in [DONE]). Writes status counts, 5xx, malformed and unexpected
responses, and latency p50/p95 of the good requests; `tunelab bench-serve` exits 1 if
any 5xx, malformed or unexpected.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm import tqdm

from tunelab.errors import DataError

KINDS = ("chat", "chat_stream", "completion", "completion_stream")
# name -> (how the request is broken, expected status)
EXPECTED_STATUS = {"malformed_json": 400, "huge_max_tokens": 400, "negative_temperature": 400,
                   "wrong_key": 401, "missing_key": 401, "unknown_model": 404}
BAD = tuple(EXPECTED_STATUS)  # the broken requests, taken in turn


def load_test(output: Path, api_key: str, url: str | None = None, base: Path | None = None,
              adapter_specs: list[str] | None = None, clients: int = 8, requests: int = 50,
              max_tokens: int = 8, gguf_specs: list[str] | None = None,
              context: int | None = None) -> dict:
    """Run the load test against ``url``, or against an own server on ``base`` or on
    ``gguf_specs`` (exactly one of the three), write the result to ``output`` and return
    it. ``api_key`` is the running server's key, or the one the own server requires;
    ``adapter_specs`` (``NAME=DIR``, with ``base``) and ``gguf_specs`` (``NAME=FILE``,
    llama.cpp with ``context`` tokens) are served by the own server."""
    adapter_specs, gguf_specs = list(adapter_specs or []), list(gguf_specs or [])
    if [bool(url), bool(base), bool(gguf_specs)].count(True) != 1:
        raise ValueError("give exactly one of url, base and gguf_specs")
    stop_server = None
    if not url:
        url, stop_server = start_server(base, adapter_specs, api_key, gguf_specs, context)
    try:
        result = run_load(url, api_key, clients, requests, max_tokens)
    finally:
        if stop_server:
            stop_server()
    result["config"] = {"url": url, "base": str(base) if base else None,
                        "adapters": adapter_specs, "gguf": gguf_specs, "context": context}
    from tunelab.util.files import write_json_atomic

    write_json_atomic(output, result)
    return result


def failed_responses(result: dict) -> int:
    """How many responses were 5xx, malformed or had an unexpected status."""
    return result["server_errors_5xx"] + result["malformed"] + result["unexpected_status"]


def start_server(base: Path | None, adapter_specs: list[str], api_key: str,
                 gguf_specs: list[str] = (), context: int | None = None):
    from tunelab.serve import server

    loaded = server.load_engine(base, [server.parse_adapter_spec(s) for s in adapter_specs],
                                gguf=[server.parse_gguf_spec(s) for s in gguf_specs],
                                context=context, on_progress=print)
    url, stop_uvicorn = server.start_in_thread(server.create_app(loaded, api_key=api_key))

    def stop():
        stop_uvicorn()
        loaded.close()

    return url, stop


def run_load(url: str, api_key: str, clients: int, requests: int, max_tokens: int) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"}
    listing = httpx.get(f"{url}/v1/models", headers=headers)
    if listing.status_code != 200:  # e.g. a wrong --api-key: no request could succeed
        raise DataError(f"{url}/v1/models answered {listing.status_code}: "
                        f"{_error_message(listing)}")
    models = [m["id"] for m in listing.json()["data"]]
    progress = tqdm(total=clients * requests, desc="requests", unit="req")
    lock = threading.Lock()

    def one_client(index: int) -> list[dict]:
        rows = []
        with httpx.Client(base_url=url, timeout=600) as http:
            for step in range(requests):
                turn = index * requests + step
                if step % 10 == 9:
                    row = bad_request(http, api_key, BAD[turn % len(BAD)], models[0])
                else:
                    row = good_request(http, headers, KINDS[turn % len(KINDS)],
                                       models[turn % len(models)], max_tokens, turn)
                rows.append(row)
                with lock:
                    progress.update()
        return rows

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = [row for batch in pool.map(one_client, range(clients)) for row in batch]
    wall = time.perf_counter() - started
    progress.close()
    good = [r for r in rows if r["expected"] == 200 and r["ok"]]
    latencies = sorted(r["seconds"] for r in good)
    failures = [r for r in rows if not r["ok"]]
    return {
        "clients": clients, "requests_per_client": requests, "max_tokens": max_tokens,
        "models": models, "total": len(rows), "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(rows) / wall, 3),
        "status_counts": dict(sorted(Counter(str(r["status"]) for r in rows).items())),
        "server_errors_5xx": sum(1 for r in rows if r["status"] >= 500),
        "malformed": sum(1 for r in rows if r["status"] == r["expected"] and not r["ok"]),
        "unexpected_status": sum(1 for r in rows if r["status"] != r["expected"]),
        "bad_requests_sent": sum(1 for r in rows if r["expected"] != 200),
        "latency_seconds": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                            "max": round(latencies[-1], 3) if latencies else None},
        "completion_tokens": sum(r.get("completion_tokens", 0) for r in good),
        "failures": failures[:20],
    }


def good_request(http, headers, kind: str, model: str, max_tokens: int, turn: int) -> dict:
    stream = kind.endswith("_stream")
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0 if turn % 2 else 0.8,
            "seed": turn, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if kind.startswith("chat"):
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": f"Ticket {turn}: my order is late."}]
    else:
        path, body["prompt"] = "/v1/completions", f"Ticket {turn}: my order is"
    started = time.perf_counter()
    response = http.post(path, json=body, headers=headers)
    seconds = time.perf_counter() - started
    row = {"kind": kind, "model": model, "status": response.status_code, "expected": 200,
           "seconds": seconds}
    try:
        tokens = check_stream(response.text, kind) if stream else check_json(response.json(), kind)
        row.update(ok=response.status_code == 200, completion_tokens=tokens)
        if tokens > max_tokens:
            raise ValueError(f"{tokens} completion tokens > max_tokens {max_tokens}")
    except (ValueError, KeyError, TypeError, IndexError, AssertionError) as err:
        row.update(ok=False, problem=f"{type(err).__name__}: {err}", body=response.text[:300])
    return row


def bad_request(http, api_key: str, how: str, model: str) -> dict:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    if how == "huge_max_tokens":
        body["max_tokens"] = 10**6
    elif how == "negative_temperature":
        body["temperature"] = -1
    elif how == "wrong_key":
        headers["Authorization"] = "Bearer not-the-key"
    elif how == "missing_key":
        del headers["Authorization"]
    elif how == "unknown_model":
        body["model"] = "no-such-model"
    content = b'{"model": "x", "messages": [' if how == "malformed_json" else \
        json.dumps(body).encode()
    started = time.perf_counter()
    response = http.post("/v1/chat/completions", content=content, headers=headers)
    row = {"kind": how, "status": response.status_code, "expected": EXPECTED_STATUS[how],
           "seconds": time.perf_counter() - started}
    try:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        row["ok"] = response.status_code == EXPECTED_STATUS[how]
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        row.update(ok=False, problem=f"{type(err).__name__}: {err}", body=response.text[:300])
    return row


def check_json(body: dict, kind: str) -> int:
    choice = body["choices"][0]
    assert body["object"] == ("chat.completion" if kind == "chat" else "text_completion")
    text = choice["message"]["content"] if kind == "chat" else choice["text"]
    assert isinstance(text, str) and choice["finish_reason"] in ("stop", "length")
    used = body["usage"]
    assert used["total_tokens"] == used["prompt_tokens"] + used["completion_tokens"]
    assert used["prompt_tokens"] > 0
    return used["completion_tokens"]


def check_stream(text: str, kind: str) -> int:
    """Every event is `data: {json}` and the last is `data: [DONE]`; exactly one chunk
    carries a finish reason; the usage chunk comes last. Returns its completion_tokens."""
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events and events[-1] == "data: [DONE]", "no [DONE] at the end"
    expected_object = "chat.completion.chunk" if kind.startswith("chat") else "text_completion"
    finishes, used = [], None
    for event in events[:-1]:
        assert event.startswith("data: "), event[:80]
        chunk = json.loads(event[len("data: "):])
        assert chunk["object"] == expected_object and used is None, chunk
        if not chunk["choices"]:
            used = chunk["usage"]
            continue
        choice = chunk["choices"][0]
        if choice["finish_reason"] is not None:
            finishes.append(choice["finish_reason"])
        piece = choice["delta"].get("content", "") if "delta" in choice else choice["text"]
        assert isinstance(piece, str), choice
    assert len(finishes) == 1 and finishes[0] in ("stop", "length"), finishes
    assert used["total_tokens"] == used["prompt_tokens"] + used["completion_tokens"], used
    return used["completion_tokens"]


def _error_message(response) -> str:
    """The message of an OpenAI error body, else the start of the body on one line."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return " ".join(response.text.split())[:200]


def _percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[pct - 1], 3)
