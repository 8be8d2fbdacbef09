"""`tunelab bench-json` (tunelab.bench.constrained_json): the schema built from the
references, a whole run on the tiny f32 GGUF (a random model, so only what a grammar
guarantees is asserted), and bad input as one line."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from tunelab.bench import constrained_json
from tunelab.cli import app as cli

# Prompts after which the tiny random model's unconstrained JSON (json_object) closes
# within 64 tokens: that grammar allows any string, and noise writes long ones.
EXAMPLES = [
    {"messages": [{"role": "user", "content": "JSON"},
                  {"role": "assistant", "content": '{"n": 1, "ok": true, "gone": null}'}],
     "source": "t.jsonl:1"},
    {"messages": [{"role": "user", "content": "JSON please"},
                  {"role": "assistant",
                   "content": '{"n": 2, "ok": false, "gone": null, "score": 0.5}'}],
     "source": "t.jsonl:2"},
    {"messages": [{"role": "user", "content": "JSON again"},
                  {"role": "assistant", "content": '{"n": 3, "ok": true, "score": 1}'}],
     "source": "t.jsonl:3"},
]
# No string values: those references' schema bounds every answer (at most 16 digits
# per number), so a random model's json_schema answers close within 64 tokens too.
EXAMPLES_SCHEMA = {"type": "object",
                   "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                                  "gone": {"type": "null"}, "score": {"type": "number"}},
                   "required": ["n", "ok"], "additionalProperties": False}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def gguf_file(tiny_base_dir, tmp_path_factory):
    from tunelab.deploy import gguf_export

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    gguf_export.convert_model(tiny_base_dir, path, "tiny")
    return path


def test_reference_schema_is_the_union_of_keys_with_their_json_types():
    references = [{"label": "a", "n": 1, "ok": True, "note": None, "tags": ["x"]},
                  {"label": "b", "n": 2, "ok": False, "note": "x", "score": 0.5},
                  {"n": 3, "ok": True, "note": "y", "score": 1, "extra": {"k": 1}}]
    assert constrained_json.reference_schema(references) == {
        "type": "object",
        "properties": {"label": {"type": "string"}, "n": {"type": "integer"},
                       "ok": {"type": "boolean"}, "note": {"type": ["string", "null"]},
                       "tags": {"type": "array"}, "score": {"type": "number"},
                       "extra": {"type": "object"}},
        "required": ["n", "ok", "note"], "additionalProperties": False}
    assert [constrained_json.json_type(v) for v in (True, 0, 0.0, "", None, {}, [])] == \
        ["boolean", "integer", "number", "string", "null", "object", "array"]


def test_bench_json_scores_and_times_every_way(gguf_file, tmp_path, write_jsonl):
    test_file = write_jsonl(tmp_path / "test.jsonl", EXAMPLES)
    output = tmp_path / "out" / "constrained_json.json"
    # stdout only, not capsys: uvicorn's logging setup closes every logging handler ever
    # made, and absl's (rouge-score imports it) then closes the stream it was made with,
    # pytest's own capture, unless that stream is sys.stderr at the time.
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = cli.main(["bench-json", "--gguf", f"tiny={gguf_file}", "--test", str(test_file),
                         "--output", str(output)])
    out = stdout.getvalue()
    assert code == 0, out
    assert out.startswith(f"loading {gguf_file} as 'tiny'") and out.endswith(f"wrote {output}\n")
    assert "tunelab bench-json: tiny (tiny.gguf), 3 examples, max_tokens 64" in out
    result = json.loads(output.read_text())
    assert set(result) == {"machine", "config", "ways"}
    assert set(result["machine"]) == {"cpu", "cpu_cores", "llama_cpp_threads",
                                      "load_average_1min", "versions"}
    assert result["machine"]["versions"]["llama-cpp-python"] == "0.3.36"
    assert result["config"] == {"model": "tiny", "gguf_file": str(gguf_file),
                                "gguf_bytes": gguf_file.stat().st_size,
                                "test_file": str(test_file), "examples": 3, "max_tokens": 64,
                                "context": None, "temperature": 0, "schema": EXAMPLES_SCHEMA}
    ways = result["ways"]
    assert list(ways) == ["none", "json_object", "json_schema"]
    assert [w["response_format"] for w in ways.values()] == [
        None, {"type": "json_object"},
        {"type": "json_schema",
         "json_schema": {"name": "reference", "schema": EXAMPLES_SCHEMA, "strict": True}}]
    score_keys = {"json_valid", "exact_match", "field_gone", "field_n", "field_ok",
                  "field_score", "task_accuracy"}
    for way in ways.values():
        assert set(way) == {"response_format", "scores", "wall_seconds", "completion_tokens",
                            "tokens_per_second", "truncated", "answers"}
        assert set(way["scores"]) == score_keys and len(way["answers"]) == 3
        assert way["completion_tokens"] > 0 and way["wall_seconds"] > 0
        assert way["tokens_per_second"] == pytest.approx(
            way["completion_tokens"] / way["wall_seconds"], rel=0.01)
    assert ways["none"]["scores"]["json_valid"] == 0.0  # noise, unconstrained: no JSON
    for name in ("json_object", "json_schema"):  # the grammar forces JSON, even from noise
        assert ways[name]["scores"]["json_valid"] == 1.0 and ways[name]["truncated"] == 0
    for answer in ways["json_schema"]["answers"]:  # and the schema's shape
        value = json.loads(answer)
        assert {"n", "ok"} <= set(value) <= {"n", "ok", "gone", "score"}
        assert type(value["n"]) is int and type(value["ok"]) is bool
        assert value.get("gone") is None


def test_test_file_without_chat_examples_is_one_line(tmp_path, write_jsonl, capsys):
    test_file = write_jsonl(tmp_path / "plain.jsonl", [{"text": "no prompt here"}])
    code, out, err = run_cli(capsys, "bench-json", "--gguf", f"tiny={tmp_path / 'none.gguf'}",
                             "--test", test_file, "--output", tmp_path / "out.json")
    assert (code, out) == (1, "")
    assert err == (f"tunelab bench-json: error: {test_file}: no chat examples (records with "
                   "'messages'); bench-json needs prompts with reference answers\n")
    assert not (tmp_path / "out.json").exists()


def test_reference_that_is_not_json_is_named_by_its_source(tmp_path, write_jsonl, capsys):
    rows = [EXAMPLES[0], {"messages": [{"role": "user", "content": "Hi"},
                                       {"role": "assistant", "content": "Hello!"}],
                          "source": "raw.jsonl:7"}]
    test_file = write_jsonl(tmp_path / "test.jsonl", rows)
    code, out, err = run_cli(capsys, "bench-json", "--gguf", f"tiny={tmp_path / 'none.gguf'}",
                             "--test", test_file, "--output", tmp_path / "out.json")
    assert (code, out) == (1, "")
    assert err == (f"tunelab bench-json: error: {test_file}: raw.jsonl:7: the reference answer "
                   "is not a JSON object; bench-json measures JSON answers\n")


def test_missing_gguf_file_and_two_ggufs_are_refused(tmp_path, write_jsonl, capsys):
    test_file = write_jsonl(tmp_path / "test.jsonl", EXAMPLES)
    missing = tmp_path / "none.gguf"
    code, out, err = run_cli(capsys, "bench-json", "--gguf", f"tiny={missing}",
                             "--test", test_file, "--output", tmp_path / "out.json")
    assert (code, err) == (1, f"tunelab bench-json: error: --gguf tiny={missing}: "
                              "file not found\n")
    code, out, err = run_cli(capsys, "bench-json", "--gguf", f"a={missing}",
                             "--gguf", f"b={missing}", "--test", test_file,
                             "--output", tmp_path / "out.json")
    assert (code, out, err) == (2, "", "tunelab bench-json: error: --gguf: give exactly one "
                                       "NAME=FILE, got 2\n")
