"""`tunelab serve` with a QLoRA adapter beside a LoRA adapter: every served answer is the
one the evaluate stage's code gives for the same prompt and model, the QLoRA adapter's
on the 4-bit base it was trained on."""

from __future__ import annotations

import sys

import openai
import pytest

from tunelab.serve import server

MAX_NEW_TOKENS = 12
QUESTIONS = ["What color is the sky?", "My order #123 is late", "Reset my password please"]
# As the test split holds them: the reference answer is left out of the prompt.
EXAMPLES = [{"messages": [{"role": "user", "content": question},
                          {"role": "assistant", "content": "unused"}]} for question in QUESTIONS]


@pytest.fixture(scope="module")
def adapters(make_tiny_adapter):
    """{served name: folder}: a QLoRA adapter (its tunelab_train.json as the train stage
    writes it for train.method qlora, 4-bit nf4) and a plain LoRA adapter."""
    from tunelab.config.params import QuantizationParams
    from tunelab.models import loading

    qlora = make_tiny_adapter("qlora", seed=4)
    loading.write_train_info(qlora, "qlora", "fp32", QuantizationParams())
    return {"tuned": qlora, "plain": make_tiny_adapter("plain", seed=5)}


@pytest.fixture(scope="module")
def served(tiny_base_dir, adapters):
    """(engine, openai client, the engine's start-up lines)."""
    from tunelab.serve import engine

    lines = []
    loaded = engine.load(tiny_base_dir, adapters, on_progress=lines.append)
    url, stop = server.start_in_thread(server.create_app(loaded))
    yield loaded, openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0,
                                timeout=60), lines
    stop()
    loaded.close()


def evaluated_answers(model, tokenizer) -> list[str]:
    """The answers the evaluate stage writes to samples.jsonl (one prompt per batch), as
    the server sends them: a last token that ends inside a UTF-8 character is decoded by
    evaluation as U+FFFD, and held back by the server (at max_tokens no later token
    completes it)."""
    from tunelab.eval import evaluation

    outputs = evaluation.evaluate_model(model, tokenizer, EXAMPLES, MAX_NEW_TOKENS,
                                        batch_size=1, desc="test").outputs
    return [answer.removesuffix("\ufffd").strip() for answer in outputs]


def test_every_served_answer_is_the_evaluated_one_qlora_on_its_4bit_base(
        served, tiny_base_dir, adapters):
    import bitsandbytes
    import torch
    from peft import PeftModel

    from tunelab.models import loading

    loaded, client, lines = served
    evaluated = {}
    for name, trained_dir in {"base": None, **adapters}.items():
        evaluated[name] = evaluated_answers(*loading.load_trained(tiny_base_dir, trained_dir))
        # Evaluation strips the spaces around an answer; the server returns them.
        answers = [client.chat.completions.create(
            model=name, messages=example["messages"][:1], max_tokens=MAX_NEW_TOKENS,
            temperature=0).choices[0].message.content.strip() for example in EXAMPLES]
        assert answers == evaluated[name], name
    # On the fp32 base (where the server used to put it) the QLoRA adapter answers
    # otherwise, so the check above tells the two bases apart.
    on_fp32 = PeftModel.from_pretrained(loading.load_base(tiny_base_dir), str(adapters["tuned"]))
    assert evaluated_answers(on_fp32.eval(), loaded.tokenizer) != evaluated["tuned"]
    # One 4-bit copy of the base holds the QLoRA adapter; the base and the LoRA adapter
    # share the fp32 one.
    quantized, full = loaded.served_by["tuned"], loaded.served_by["base"]
    assert loaded.served_by["plain"] is full and quantized is not full
    gate = "base_model.model.model.layers.0.mlp.gate_proj"  # a layer without LoRA
    assert type(quantized.get_submodule(gate)) is bitsandbytes.nn.Linear4bit
    assert type(full.get_submodule(gate)) is torch.nn.Linear
    assert lines == [f"loading {tiny_base_dir} as 'base' with adapters tuned, plain",
                     "tuned was trained with QLoRA: it is served on the 4-bit base it was "
                     "trained and evaluated on"]


def test_a_qlora_adapter_without_bitsandbytes_is_one_line_naming_the_extra(
        tiny_base_dir, adapters, monkeypatch):
    from tunelab.errors import MissingExtraError
    from tunelab.serve import engine

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    with pytest.raises(MissingExtraError) as raised:
        engine.load(tiny_base_dir, adapters)
    assert str(raised.value) == (f"--adapter tuned={adapters['tuned']} was trained with QLoRA and "
                                 "is served on its 4-bit base: the qlora extra is not "
                                 'installed: pip install "tunelab[qlora]"')
