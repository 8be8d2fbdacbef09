"""Token checks before training (tunelab.validation), on the real SmolLM2 tokenizer."""

from __future__ import annotations

import copy


from tunelab.data import validation

# "What is 2+2?" renders to a 37-token prompt and a 40-token conversation
# (SmolLM2 adds its default system message); see test_encoding.py.
SHORT = {"messages": [{"role": "user", "content": "What is 2+2?"},
                      {"role": "assistant", "content": "4"}], "task": None, "source": "a.jsonl:1"}
# 41-token prompt, 56 tokens in all.
LONG = {"messages": [{"role": "user", "content": "Name three primary colours, please, in a list."},
                     {"role": "assistant",
                      "content": "Red, yellow and blue are the three primary colours of paint."}],
        "task": None, "source": "a.jsonl:2"}

# Generation prompt says "assistant", the rendered conversation says "bot".
PROMPT_NOT_A_PREFIX = (
    "{% for message in messages %}"
    "{% set role = 'bot' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<|im_start|>' + role + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def with_template(tokenizer, chat_template):
    custom = copy.deepcopy(tokenizer)
    custom.chat_template = chat_template
    return custom


def test_good_examples_pass_with_count_and_preview(tokenizer):
    result = validation.check_examples([SHORT, LONG], tokenizer, max_length=256)
    assert result.ok
    assert (result.checked, result.truncated, result.errors, result.warnings) == (2, 0, [], [])
    assert result.preview.endswith("<|im_start|>assistant\n[[4<|im_end|>\n]]")
    assert result.summary() == {"examples_checked": 2, "errors": 0, "error_messages": [],
                                "warnings": [], "truncated": 0, "text_windows": 0,
                                "dropped_untrainable": 0, "dropped_untrainable_examples": []}


def test_prompt_longer_than_max_length_is_an_error(tokenizer):
    result = validation.check_examples([SHORT, LONG], tokenizer, max_length=40)
    assert not result.ok
    assert result.errors == [
        "a.jsonl:2: the prompt alone is 41 tokens, so no answer token survives "
        "train.max_length=40 (raise train.max_length or shorten it)"]


def test_prompt_exactly_max_length_is_an_error(tokenizer):
    result = validation.check_examples([SHORT], tokenizer, max_length=37)
    assert result.errors == [
        "a.jsonl:1: the prompt alone is 37 tokens, so no answer token survives "
        "train.max_length=37 (raise train.max_length or shorten it)"]


def test_template_that_drops_eos_is_an_error(no_eos_tokenizer):
    result = validation.check_examples([SHORT, LONG], no_eos_tokenizer,
                                       max_length=256)
    assert result.errors == [
        f"a.jsonl:{line}: the chat template loses the EOS token '<|im_end|>' after the answer "
        "(and writes no end-of-turn token), so the model would never learn to stop"
        for line in (1, 2)]


def test_tokenizer_without_chat_template_rejects_chat_data(tokenizer):
    result = validation.check_examples([SHORT], with_template(tokenizer, None), max_length=256)
    assert result.errors == [
        "the data is chat (messages) but the base model's tokenizer has no chat template: set "
        "model.chat_template to one of chatml, qwen3, llama3, gemma, llama2, mistral, phi3, "
        "alpaca or a .jinja file (docs/model-families.md), or use plain `text` data"]
    assert result.checked == 0


def test_tokenizer_without_chat_template_accepts_text_data(tokenizer):
    text = {"text": "Once upon a time.", "task": None, "source": "t.jsonl:1"}
    result = validation.check_examples([text], with_template(tokenizer, None), max_length=256)
    assert (result.ok, result.checked) == (True, 1)
    assert result.preview == "[[Once upon a time.<|im_end|>]]"


def test_truncation_above_the_ratio_warns_with_counts_and_threshold(tokenizer):
    result = validation.check_examples([SHORT, LONG], tokenizer, max_length=50)
    assert result.ok and result.truncated == 1
    assert result.warnings == [
        "1 of 2 examples (50%) are cut at train.max_length=50; their answers lose their ends "
        "(more than validate.max_truncated_ratio=0.05)"]


def test_truncation_within_the_ratio_warns_without_threshold(tokenizer):
    result = validation.check_examples([SHORT, LONG], tokenizer, max_length=50,
                                       max_truncated_ratio=0.5)
    assert result.warnings == [
        "1 of 2 examples (50%) are cut at train.max_length=50; their answers lose their ends"]


def test_prompt_rendered_differently_in_conversation_warns(tokenizer):
    result = validation.check_examples([SHORT, LONG], with_template(tokenizer, PROMPT_NOT_A_PREFIX),
                                       max_length=256)
    assert result.ok
    assert result.warnings == [
        "2 examples: the chat template renders the prompt differently inside the full conversation; "
        "training and inference contexts differ slightly"]


def test_validate_files_puts_parse_errors_before_token_errors(tmp_path, write_jsonl, tokenizer):
    path = write_jsonl(tmp_path / "data.jsonl", [
        {"instruction": "Name three primary colours, please, in a list.",
         "output": "Red, yellow and blue are the three primary colours of paint."},
        {"instruction": "No output"},
        {"prompt": "What is 2+2?", "completion": "4"},
    ])
    result = validation.validate_files([path], tokenizer, max_length=40)
    assert result.checked == 2
    assert result.errors == [
        f"{path}:2: missing field 'output'",
        f"{path}:1: the prompt alone is 41 tokens, so no answer token survives "
        "train.max_length=40 (raise train.max_length or shorten it)"]


# --- validate.untrainable: a record no answer token of which fits (issue 29) -----------

LEFT_OUT = ("a.jsonl:2: the prompt alone is 41 tokens, so no answer token survives "
            "train.max_length=40; left out of training (validate.untrainable=drop)")


def test_untrainable_drop_leaves_the_example_out_naming_it_and_counting_it(tokenizer):
    result = validation.check_examples([SHORT, LONG], tokenizer, max_length=40,
                                       untrainable="drop", max_dropped_ratio=0.5)
    assert (result.ok, result.errors, result.warnings) == (True, [], [LEFT_OUT])
    assert result.summary() == {"examples_checked": 2, "errors": 0, "error_messages": [],
                                "warnings": [LEFT_OUT], "truncated": 0, "text_windows": 0,
                                "dropped_untrainable": 1,
                                "dropped_untrainable_examples": ["a.jsonl:2"]}


def test_untrainable_drop_of_more_than_max_dropped_ratio_fails_on_each(tokenizer):
    result = validation.check_examples([SHORT, LONG], tokenizer, max_length=40,
                                       untrainable="drop", max_dropped_ratio=0.05)
    assert (result.dropped, result.truncated) == ([], 0)
    assert result.warnings == [
        "1 of 2 examples (50.0%) leave no answer token within train.max_length, more than "
        "validate.max_dropped_ratio=0.05 to leave out of training: each is an error"]
    assert result.errors == [
        "a.jsonl:2: the prompt alone is 41 tokens, so no answer token survives "
        "train.max_length=40 (raise train.max_length or shorten it)"]


def test_untrainable_fail_is_an_error_and_not_counted_as_truncated(tokenizer):
    result = validation.check_examples([SHORT, LONG], tokenizer, max_length=40,
                                       untrainable="fail", max_dropped_ratio=1.0)
    assert (result.dropped, result.truncated, result.warnings) == ([], 0, [])
    assert result.errors == [
        "a.jsonl:2: the prompt alone is 41 tokens, so no answer token survives "
        "train.max_length=40 (raise train.max_length or shorten it)"]


def test_untrainable_examples_are_those_no_answer_token_of_fits(tokenizer):
    text = {"text": "word " * 100, "task": None, "source": "t.jsonl:1"}  # windows: always trains
    assert untrainable([SHORT, LONG, text], tokenizer, 40) == [LONG]
    assert untrainable([SHORT, LONG, LONG], tokenizer, 40) == [LONG]  # as deduplicated
    assert untrainable([SHORT, LONG], tokenizer, 42) == []


def test_a_chat_with_no_trained_turn_is_not_set_aside_as_cut_by_max_length(tokenizer):
    # Nothing of it was cut: no turn asks for loss ("train": false), a different matter.
    opted_out = {"messages": [SHORT["messages"][0], {**SHORT["messages"][1], "train": False}],
                 "task": None, "source": "a.jsonl:3"}
    assert untrainable([opted_out, LONG], tokenizer, 40) == [LONG]


def untrainable(examples: list[dict], tokenizer, max_length: int) -> list[dict]:
    """What the prepare stage sets aside: analysis.analyze's ``untrainable``."""
    from tunelab.data import analysis

    return analysis.analyze(examples, tokenizer, max_length=max_length, train_on="all_assistant",
                            format_counts={}).untrainable


def test_report_validation_section_names_the_dropped_records():
    from tunelab.report import html_page

    summary = validation.ValidationResult(checked=300, dropped=["data/raw/glaive.json:1234"],
                                          warnings=[LEFT_OUT]).summary()
    html = html_page.build_report(eval_metrics={}, validation=summary)
    section = html.split("<h3>Validation</h3>", 1)[1].split("</section>", 1)[0]
    assert ('<p id="dropped-untrainable"><span class="status status-worse">1 left out</span> of '
            "training: no answer token of theirs fits train.max_length (validate.untrainable: "
            "drop); dropped_untrainable_examples names each file:line.</p>") in section
    assert "<li>data/raw/glaive.json:1234</li>" in section
    quiet = html_page.build_report(eval_metrics={}, validation=validation.ValidationResult(
        checked=300).summary())
    assert 'id="dropped-untrainable"' not in quiet
