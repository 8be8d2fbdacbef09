"""The judge stage (tunelab.judge): its prompts and verdict parsing, the sums with a scripted
judge (exact rates, both orders, unparseable verdicts counted), the off switch, and the
real mechanism with the embedded SmolLM2 GGUF as judge, through llama.cpp and through
`tunelab serve` with the official openai client. The verdicts' quality is not tested:
a 135M judge is no judge, but every one of its verdicts must parse or be counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import free_port, run_stage
from tunelab.config import params
from tunelab.deploy import llama_runtime
from tunelab.errors import ModelSourceError, ParamsError
from tunelab.eval.intervals import mean_interval
from tunelab.judge import engines, judging, prompts
from tunelab.models import source
from tunelab.util import files

SAMPLE = {"source": "t.jsonl:1", "prompt": "What is 2+2?", "reference": "4", "base": "5",
          "tuned": "4"}
# Tiny answers: the real judge reads short prompts, so each verdict takes about a second.
TINY_SAMPLES = [SAMPLE, {"source": "t.jsonl:2", "prompt": "Capital of France?",
                         "reference": "Paris", "base": "Paris", "tuned": "Lyon"}]
TINY_JUDGE = {"criteria": ["correctness"], "max_new_tokens": 12, "threads": 1}
SERVER_KEY = "judge-key-789"


class ScriptedJudge:
    """An engine answering ``reply(messages, name)``; it counts its questions."""
    engine = "scripted"

    def __init__(self, reply):
        self.reply, self.asked = reply, 0

    def answer(self, messages, schema, name):
        self.asked += 1
        return self.reply(messages, name)

    def close(self):
        pass


def answers_shown(messages) -> tuple[str, str]:
    """(answer A, answer B) as a pairwise prompt shows them."""
    text = messages[-1]["content"]
    return (text.split("[Answer A]\n")[1].split("\n\n[Answer B]")[0],
            text.split("[Answer B]\n")[1])


def prefers(good: str):
    """A position-blind judge: the answer ``good`` wins; rubric 5 for it, else 2."""
    def reply(messages, name):
        if name == "pairwise":
            a, b = answers_shown(messages)
            return json.dumps({"winner": "A" if a == good else "B" if b == good else "tie"})
        return json.dumps({"correctness": 5 if messages[-1]["content"].endswith(good) else 2})
    return reply


# --- prompts and parsing ----------------------------------------------------------------

def test_pairwise_prompt_shows_request_reference_and_the_answers_in_the_order_given():
    messages = prompts.pairwise_messages(SAMPLE, "five", "four")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '{"winner": "tie"}' in messages[0]["content"]
    assert messages[1]["content"] == ("[Request]\nWhat is 2+2?\n\n[Reference answer]\n4\n\n"
                                      "[Answer A]\nfive\n\n[Answer B]\nfour")
    no_reference = prompts.pairwise_messages({**SAMPLE, "reference": ""}, "x", "y")
    assert "Reference" not in no_reference[1]["content"]


def test_rubric_prompt_and_schema_name_every_criterion():
    messages = prompts.rubric_messages(SAMPLE, "4", ["correctness", "coherence"])
    assert "Criteria: correctness, coherence." in messages[0]["content"]
    assert '{"correctness": N, "coherence": N}' in messages[0]["content"]
    assert messages[1]["content"].endswith("[Answer]\n4")
    schema = prompts.rubric_schema(["correctness", "coherence"])
    assert schema["required"] == ["correctness", "coherence"]
    assert schema["properties"]["coherence"] == {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("text, verdict", [
    ('{"winner": "A"}', {"winner": "A"}),
    (' { "winner": "tie"} ', {"winner": "tie"}),
    ('```json\n{"winner": "B"}\n```', {"winner": "B"}),
    ('{"winner": "C"}', None),
    ('{"winner": "A", "why": "shorter"}', None),
    ('{"winner": "A"', None),        # cut at max_new_tokens
    ("A is better", None),
    ('["A"]', None),
    ("", None)])
def test_pairwise_verdict_parses_only_when_it_fits_the_schema(text, verdict):
    assert prompts.parse_pairwise(text) == verdict


@pytest.mark.parametrize("text, verdict", [
    ('{"coherence": 4, "correctness": 1}', {"correctness": 1, "coherence": 4}),
    ('{"correctness": 7, "coherence": 4}', None),   # out of 1..5
    ('{"correctness": 0, "coherence": 4}', None),
    ('{"correctness": 4.5, "coherence": 4}', None),
    ('{"correctness": "4", "coherence": 4}', None),
    ('{"correctness": true, "coherence": 4}', None),
    ('{"correctness": 4}', None),                   # a criterion missing
    ('{"correctness": 4, "coherence": 4, "style": 3}', None),
    ("not json", None)])
def test_rubric_verdict_parses_only_with_every_criterion_scored_1_to_5(text, verdict):
    assert prompts.parse_rubric(text, ["correctness", "coherence"]) == verdict


# --- the sums, with a scripted judge ----------------------------------------------------

def test_position_blind_judge_gives_exact_rates_and_full_consistency():
    samples = [dict(SAMPLE, base="bad", tuned="good"), dict(SAMPLE, base="bad", tuned="good"),
               dict(SAMPLE, base="good", tuned="bad")]
    judge = ScriptedJudge(prefers("good"))
    summary, verdicts = judging.judge(judge, samples, ["correctness"])
    assert judge.asked == len(verdicts) == 3 * 2 + 3 * 2  # both orders, then base and tuned
    pair = summary["tuned_vs_base"]
    assert (pair["judgements"], pair["win"], pair["tie"], pair["loss"]) == (6, 4 / 6, 0, 2 / 6)
    assert pair["preference"] == pytest.approx(2 / 3)
    assert (pair["preference_low"], pair["preference_high"]) == mean_interval([1, 1, 0])
    assert (pair["examples"], pair["position_consistency"], pair["unparseable"]) == (3, 1.0, 0)
    assert "aligned_vs_tuned" not in summary
    assert summary["rubric"] == {
        "base": {"correctness": 3.0, "judgements": 3, "unparseable": 0},
        "tuned": {"correctness": 4.0, "judgements": 3, "unparseable": 0}}
    assert (summary["examples"], summary["verdicts"], summary["unparseable"]) == (3, 12, 0)
    first = verdicts[0]
    assert first == {"example": 0, "source": "t.jsonl:1", "task": "pairwise",
                     "pair": "tuned_vs_base", "order": ["base", "tuned"],
                     "raw": '{"winner": "B"}', "verdict": {"winner": "B"}}
    assert verdicts[1]["order"] == ["tuned", "base"] and verdicts[1]["verdict"] == {"winner": "A"}


def test_a_judge_that_always_says_A_is_a_tie_overall_and_never_consistent():
    judge = ScriptedJudge(lambda messages, name: '{"winner": "A"}')
    summary, _ = judging.judge(judge, [SAMPLE, SAMPLE], ["correctness"], rubric=False)
    pair = summary["tuned_vs_base"]
    assert (pair["win"], pair["tie"], pair["loss"]) == (0.5, 0, 0.5)
    assert (pair["preference"], pair["preference_low"], pair["preference_high"]) == (0.5, 0.5, 0.5)
    assert pair["position_consistency"] == 0.0
    assert "rubric" not in summary and summary["verdicts"] == 4


def test_ties_in_both_orders_are_consistent():
    judge = ScriptedJudge(lambda messages, name: '{"winner": "tie"}')
    pair = judging.judge(judge, [SAMPLE], ["correctness"], rubric=False)[0]["tuned_vs_base"]
    assert (pair["win"], pair["tie"], pair["loss"], pair["preference"],
            pair["position_consistency"]) == (0, 1.0, 0, 0.5, 1.0)


def test_unparseable_verdicts_are_counted_kept_and_left_out_of_the_means():
    replies = iter(['{"winner": "B"}', "I think B", '{"winner": "B"}', '{"winner": "A"}',
                    '{"correctness": 7}', '{"correctness": 4}',    # base: one score out of range
                    '{"correctness": 2}', '{"correctness": 3'])     # tuned: one cut short
    judge = ScriptedJudge(lambda messages, name: next(replies))
    summary, verdicts = judging.judge(judge, [SAMPLE, SAMPLE], ["correctness"])
    pair = summary["tuned_vs_base"]
    # Example 0: one order parsed (tuned won); example 1: both (tuned won twice).
    assert (pair["judgements"], pair["unparseable"], pair["examples"]) == (3, 1, 2)
    assert (pair["win"], pair["loss"], pair["preference"]) == (1.0, 0, 1.0)
    assert pair["position_consistency"] == 1.0  # only example 1 has both orders
    assert summary["rubric"]["base"] == {"correctness": 4.0, "judgements": 1, "unparseable": 1}
    assert summary["rubric"]["tuned"] == {"correctness": 2.0, "judgements": 1, "unparseable": 1}
    assert summary["unparseable"] == 3 and summary["verdicts"] == 8
    unparsed = [v["raw"] for v in verdicts if v["verdict"] is None]
    assert unparsed == ["I think B", '{"correctness": 7}', '{"correctness": 3']


def test_nothing_parsed_leaves_the_rates_empty():
    judge = ScriptedJudge(lambda messages, name: "?")
    summary, _ = judging.judge(judge, [SAMPLE], ["correctness"])
    pair = summary["tuned_vs_base"]
    assert (pair["judgements"], pair["unparseable"], pair["win"], pair["preference"],
            pair["preference_low"], pair["position_consistency"]) == (0, 2, None, None, None, None)
    assert summary["rubric"]["tuned"] == {"correctness": None, "judgements": 0, "unparseable": 1}


def test_an_aligned_model_adds_its_pair_and_its_rubric():
    samples = [dict(SAMPLE, aligned="good", tuned="bad", base="bad")]
    judge = ScriptedJudge(prefers("good"))
    summary, verdicts = judging.judge(judge, samples, ["correctness"])
    assert len(verdicts) == 2 + 2 + 3
    assert summary["tuned_vs_base"]["tie"] == 1.0
    assert summary["aligned_vs_tuned"]["win"] == 1.0
    assert [v["order"] for v in verdicts if v.get("pair") == "aligned_vs_tuned"] == [
        ["tuned", "aligned"], ["aligned", "tuned"]]
    assert list(summary["rubric"]) == ["base", "tuned", "aligned"]


# --- params and the engine's choice ----------------------------------------------------

def judge_params(tmp_path: Path, **judge) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"judge": judge}))
    return path


@pytest.mark.parametrize("criteria", [[], ["correctness", "correctness"], ["two words"],
                                      ["unparseable"], "correctness"])
def test_criteria_must_be_distinct_names(tmp_path, criteria):
    with pytest.raises(ParamsError, match=r"judge\.criteria") as caught:
        params.load("judge", judge_params(tmp_path, criteria=criteria))
    assert "\n" not in str(caught.value)


def test_engine_choice_refuses_what_it_cannot_judge_with(tmp_path):
    def opened(**judge):
        return engines.open_engine(params.load("judge", judge_params(tmp_path, **judge)))

    with pytest.raises(ParamsError, match=r"^judge.model: 'gpt-judge' is not a built-in model "
                       r"\(smollm2-135m-instruct\), a \.gguf file or an http\(s\):// endpoint"):
        opened(model="gpt-judge")
    with pytest.raises(ModelSourceError, match=r"^judge.model: GGUF file nowhere.gguf not found$"):
        opened(model="nowhere.gguf")
    with pytest.raises(ParamsError, match=r"^judge.endpoint_model: name the model to ask "
                       r"http://127.0.0.1:9/v1 for"):
        opened(model="http://127.0.0.1:9/v1")


# --- the stage ---------------------------------------------------------------------------

def workspace(root: Path, samples: list[dict], **judge) -> Path:
    files.write_jsonl_atomic(root / "metrics/samples.jsonl", samples)
    (root / "params.yaml").write_text(yaml.safe_dump({"judge": judge}))
    return root


def outputs(root: Path) -> tuple[dict, list[dict]]:
    return (files.read_json(root / "metrics/judge.json"),
            files.read_jsonl(root / "metrics/judge_verdicts.jsonl"))


def test_off_writes_a_note_and_no_verdicts(tmp_path):
    done = run_stage("judge", workspace(tmp_path, [SAMPLE], model=""), timeout=60)
    assert done.returncode == 0, done.stderr
    assert outputs(tmp_path) == ({"judge": "off"}, [])
    assert "judge: off" in done.stdout


def assert_judged(root: Path, engine: str, samples: int):
    """judge.json's shape, and every verdict parsed into its schema or counted."""
    summary, verdicts = outputs(root)
    assert summary["engine"] == engine and summary["examples"] == samples
    assert len(verdicts) == summary["verdicts"] == samples * 2 + samples * 2
    for verdict in verdicts:
        if verdict["verdict"] is None:
            continue
        if verdict["task"] == "pairwise":
            assert verdict["verdict"] == prompts.parse_pairwise(verdict["raw"])
            assert verdict["verdict"]["winner"] in ("A", "B", "tie")
        else:
            assert verdict["verdict"] == prompts.parse_rubric(verdict["raw"], ["correctness"])
            assert verdict["verdict"]["correctness"] in range(1, 6)
    unparsed = sum(v["verdict"] is None for v in verdicts)
    assert summary["unparseable"] == unparsed
    pair = summary["tuned_vs_base"]
    assert pair["judgements"] + pair["unparseable"] == 2 * samples
    for model in ("base", "tuned"):
        rubric = summary["rubric"][model]
        assert rubric["judgements"] + rubric["unparseable"] == samples
        assert rubric["correctness"] is None or 1 <= rubric["correctness"] <= 5
    assert unparsed == pair["unparseable"] + sum(r["unparseable"]
                                                 for r in summary["rubric"].values())
    if pair["judgements"]:
        assert abs(pair["win"] + pair["tie"] + pair["loss"] - 1) < 1e-9
        assert pair["preference_low"] <= pair["preference"] <= pair["preference_high"]
    return summary


def test_embedded_smollm2_judges_through_llama_cpp(tmp_path):
    root = workspace(tmp_path, TINY_SAMPLES, model="smollm2-135m-instruct", **TINY_JUDGE)
    done = run_stage("judge", root, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = assert_judged(root, "llama.cpp", samples=2)
    assert (summary["model"], summary["llama_cpp_cpu"]) == ("smollm2-135m-instruct",
                                                            llama_runtime.cpu_backend())
    assert "verdicts unparseable" in done.stdout


@pytest.fixture(scope="module")
def judge_server():
    """`tunelab serve --gguf judge=<embedded SmolLM2>` on a free port, API key required."""
    found = source.resolve("smollm2-135m-instruct")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli.app", "serve", "--gguf",
         f"judge={Path(found.location) / found.gguf_file}", "--port", str(port),
         "--threads", "1", "--context", "1024", "--max-tokens-limit", "64"],
        env={**os.environ, "TUNELAB_API_KEY": SERVER_KEY}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"tunelab serve exited {server.returncode}: {server.stderr.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.3)
        yield f"{url}/v1"
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_tunelab_serve_is_a_judge_endpoint_through_the_openai_client(judge_server, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", SERVER_KEY)
    root = workspace(tmp_path, TINY_SAMPLES, model=judge_server, endpoint_model="judge",
                     api_key_env="JUDGE_KEY", **TINY_JUDGE)
    done = run_stage("judge", root, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = assert_judged(root, "endpoint", samples=2)
    assert (summary["model"], summary["endpoint_model"]) == (judge_server, "judge")
    assert "llama_cpp_cpu" not in summary  # the endpoint's kernels are its own business


def one_line_error(root: Path) -> str:
    done = run_stage("judge", root, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert not (root / "metrics/judge.json").exists()
    return lines[0]


@pytest.mark.parametrize("key, reason", [
    ("wrong-key", "refused the API key (HTTP 401: Incorrect or missing API key: send it as "
                  "'Authorization: Bearer KEY'; the key in $JUDGE_KEY)"),
    (None, "refused the API key (HTTP 401: Incorrect or missing API key: send it as "
           "'Authorization: Bearer KEY'; $JUDGE_KEY is not set)")])
def test_a_refused_key_is_one_line_naming_the_endpoint(judge_server, tmp_path, monkeypatch,
                                                       key, reason):
    if key is None:
        monkeypatch.delenv("JUDGE_KEY", raising=False)
    else:
        monkeypatch.setenv("JUDGE_KEY", key)
    root = workspace(tmp_path, TINY_SAMPLES, model=judge_server, endpoint_model="judge",
                     api_key_env="JUDGE_KEY", **TINY_JUDGE)
    assert one_line_error(root) == f"judge: error: judge.model: {judge_server}: {reason}"


def test_an_unknown_endpoint_model_is_one_line(judge_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_JUDGE_API_KEY", SERVER_KEY)
    root = workspace(tmp_path, TINY_SAMPLES, model=judge_server, endpoint_model="gpt-9",
                     **TINY_JUDGE)
    line = one_line_error(root)
    assert line.startswith(f"judge: error: judge.model: {judge_server}: HTTP 404: ")
    assert "gpt-9" in line


def test_an_endpoint_that_is_down_is_one_line_naming_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    root = workspace(tmp_path, TINY_SAMPLES, model=url, endpoint_model="judge", **TINY_JUDGE)
    line = one_line_error(root)
    assert line.startswith(f"judge: error: judge.model: {url}: cannot connect (")
    assert line.endswith("Connection refused); is the server running?")
