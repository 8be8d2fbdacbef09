"""Token ids and loss labels for one example (tunelab.encoding), on the real SmolLM2 tokenizer."""

from __future__ import annotations

from tunelab.data import encoding
from tunelab.data.encoding import IGNORE_INDEX

QUESTION = {"messages": [{"role": "user", "content": "What is 2+2?"},
                         {"role": "assistant", "content": "4"}]}
WITH_SYSTEM = {"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello"}]}


def test_smollm2_tokenizer_facts(tokenizer):
    # The values the other tests rely on.
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert tokenizer.pad_token == "<|im_end|>"


def test_chat_labels_mask_exactly_the_prompt(tokenizer):
    encoded = encoding.encode(tokenizer, QUESTION, max_length=256)
    prompt = encoding.prompt_ids(tokenizer, QUESTION)
    assert encoded.input_ids == encoding.chat_ids(tokenizer, QUESTION["messages"])
    assert encoded.input_ids[:len(prompt)] == prompt
    assert encoded.prompt_tokens == len(prompt) == 37
    assert encoded.labels[:37] == [IGNORE_INDEX] * 37
    assert encoded.labels[37:] == encoded.input_ids[37:]
    assert tokenizer.decode(encoded.input_ids[37:]) == "4<|im_end|>\n"
    assert encoded.loss_tokens == 3
    assert (encoded.full_tokens, encoded.truncated, encoded.prefix_ok) == (40, False, True)


def test_chat_completion_carries_eos(tokenizer):
    encoded = encoding.encode(tokenizer, QUESTION, max_length=256)
    assert encoded.ends_with_eos is True
    completion = encoded.input_ids[encoded.prompt_tokens:]
    assert tokenizer.eos_token_id in completion[-2:]


def test_existing_system_message_is_kept_and_masked(tokenizer):
    encoded = encoding.encode(tokenizer, WITH_SYSTEM, max_length=256)
    assert tokenizer.decode(encoded.input_ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n")
    assert encoded.prompt_tokens == 18
    assert tokenizer.decode(encoded.input_ids[18:]) == "Hello<|im_end|>\n"


def test_template_without_eos_after_answer_is_detected(no_eos_tokenizer):
    encoded = encoding.encode(no_eos_tokenizer, QUESTION, max_length=256)
    assert encoded.ends_with_eos is False
    assert no_eos_tokenizer.decode(encoded.input_ids[encoded.prompt_tokens:]) == "4"


def test_text_example_trains_on_every_token_plus_eos(tokenizer):
    encoded = encoding.encode(tokenizer, {"text": "hello world"}, max_length=256)
    assert encoded.input_ids == [28120, 905, tokenizer.eos_token_id]
    assert encoded.labels == encoded.input_ids
    assert (encoded.prompt_tokens, encoded.full_tokens, encoded.loss_tokens) == (0, 3, 3)
    assert (encoded.truncated, encoded.prefix_ok, encoded.ends_with_eos) == (False, True, True)


def test_text_example_cut_at_max_length(tokenizer):
    encoded = encoding.encode(tokenizer, {"text": "hello world"}, max_length=2)
    assert encoded.input_ids == encoded.labels == [28120, 905]
    assert (encoded.full_tokens, encoded.truncated) == (3, True)


def test_exactly_max_length_is_not_truncated(tokenizer):
    encoded = encoding.encode(tokenizer, QUESTION, max_length=40)
    assert (len(encoded.input_ids), encoded.truncated, encoded.loss_tokens) == (40, False, 3)


def test_chat_cut_inside_the_answer_keeps_the_answer_start(tokenizer):
    encoded = encoding.encode(tokenizer, QUESTION, max_length=38)
    assert encoded.truncated is True
    assert encoded.labels == [IGNORE_INDEX] * 37 + [encoded.input_ids[37]]
    assert encoded.loss_tokens == 1


def test_max_length_shorter_than_prompt_leaves_no_loss_tokens(tokenizer):
    encoded = encoding.encode(tokenizer, QUESTION, max_length=20)
    assert len(encoded.input_ids) == len(encoded.labels) == 20
    assert encoded.loss_tokens == 0
    assert (encoded.prompt_tokens, encoded.full_tokens, encoded.truncated) == (37, 40, True)


def test_loss_preview_brackets_the_answer(tokenizer):
    encoded = encoding.encode(tokenizer, WITH_SYSTEM, max_length=256)
    assert encoding.render_loss_preview(tokenizer, encoded) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n[[Hello<|im_end|>\n]]")


def test_loss_preview_of_text_example_brackets_everything(tokenizer):
    encoded = encoding.encode(tokenizer, {"text": "hello world"}, max_length=256)
    assert encoding.render_loss_preview(tokenizer, encoded) == "[[hello world<|im_end|>]]"


def test_loss_preview_closes_when_answer_is_cut(tokenizer):
    encoded = encoding.encode(tokenizer, QUESTION, max_length=38)
    assert encoding.render_loss_preview(tokenizer, encoded).endswith("<|im_start|>assistant\n[[4]]")
