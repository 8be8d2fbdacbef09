"""The Ollama Modelfile (tunelab.deploy.ollama): its TEMPLATE, rendered by Go's text/template
(the engine Ollama uses; tests/ollama_render/main.go), gives the prompt text the tokenizer's
chat template gives, so Ollama prompts the model as it was trained.

Not checked here, since Ollama cannot be installed: Ollama itself (it prepends the
Modelfile's SYSTEM as a system message when a request has none; the test does that step
as Ollama's documentation describes it) and how its runner tokenizes the text.
"""

from __future__ import annotations

import copy
import re

import pytest

from tunelab.chat import stops
from tunelab.deploy import ollama
from tunelab.errors import DeployError

CONVERSATIONS = [
    [{"role": "user", "content": "My order ORD-123456 arrived broken."}],
    [{"role": "system", "content": "You triage support tickets. Answer in JSON."},
     {"role": "user", "content": "Refund please"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Two lines:\nfirst\nsecond"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": '{"category": "billing"}'},
     {"role": "user", "content": "Café {{ not a template }} 東京"}],
]


def modelfile_parts(text: str) -> tuple[str, str | None]:
    """(TEMPLATE, SYSTEM) of a Modelfile, read the way Ollama reads triple-quoted values."""
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return template, system.group(1) if system else None


def as_ollama_sends(messages: list[dict], system: str | None) -> list[dict]:
    if system and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}, *messages]
    return messages


@pytest.mark.parametrize("system_prompt", ["", "You triage support tickets."])
def test_template_renders_the_chat_templates_prompt_in_go(tokenizer, render_go, system_prompt):
    text = ollama.modelfile("tuned-q8_0.gguf", ollama.read_shape(tokenizer),
                            stops.stop_texts(tokenizer),
                            system_prompt, max_new_tokens=64)
    template, system = modelfile_parts(text)
    assert system == (system_prompt or None)
    for messages in CONVERSATIONS:
        sent = as_ollama_sends(messages, system)
        assert render_go(template, sent) == tokenizer.apply_chat_template(
            sent, tokenize=False, add_generation_prompt=True)


def test_modelfile_names_the_file_stops_and_greedy_defaults(tokenizer):
    text = ollama.modelfile("tuned-q4_k_m.gguf", ollama.read_shape(tokenizer),
                            stops.stop_texts(tokenizer), "", max_new_tokens=48)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "FROM ./tuned-q4_k_m.gguf"
    assert [line for line in lines if line.startswith("PARAMETER")] == [
        'PARAMETER stop "<|im_end|>"', "PARAMETER temperature 0", "PARAMETER num_predict 48"]
    assert "SYSTEM" not in text


def test_literal_braces_in_a_template_are_escaped_for_go(tokenizer, render_go):
    braced = copy.deepcopy(tokenizer)
    braced.chat_template = (
        "{% for m in messages %}{{ '{{' + m['role'] + '}}\n' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '{{assistant}}\n' }}{% endif %}")
    template, _ = modelfile_parts(ollama.modelfile("m.gguf", ollama.read_shape(braced),
                                                   stops.stop_texts(braced), "", 8))
    for messages in CONVERSATIONS:
        assert render_go(template, messages) == braced.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)


def test_a_template_no_shape_rebuilds_is_refused_naming_its_closest_family(tokenizer):
    # Llama 2's layout without its BOS: neither role wrappers nor the llama2 family's shape
    # (tests/test_families.py renders the real one).
    llama2 = copy.deepcopy(tokenizer)
    llama2.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\n' + messages[0]['content']"
        " + '\n<</SYS>>\n\n' %}{% set messages = messages[1:] %}{% else %}{% set sys = '' %}"
        "{% endif %}{% for m in messages %}{% if m['role'] == 'user' %}"
        "{{ '[INST] ' + (sys if loop.first else '') + m['content'] + ' [/INST]' }}"
        "{% else %}{{ ' ' + m['content'] + ' </s>' }}{% endif %}{% endfor %}")
    with pytest.raises(DeployError, match=r"^chat template leaves out the text of a lone system "
                                          r"message, and no registered family's Ollama template "
                                          r"renders it \(closest family: llama2\): an Ollama "
                                          r"TEMPLATE cannot reproduce it$"):
        ollama.read_shape(llama2)
    numbered = copy.deepcopy(tokenizer)  # a turn number in each wrapper: no fixed text
    numbered.chat_template = ("{% for m in messages %}{{ loop.index|string + '|' + m['role'] + "
                              "'|' + m['content'] + '\n' }}{% endfor %}")
    with pytest.raises(DeployError, match=r"^chat template writes the first user message "
                                          r"differently without a system message, and no "
                                          r"registered family's Ollama template renders it "
                                          r"\(closest family: none\): an Ollama TEMPLATE cannot "
                                          r"reproduce it$"):
        ollama.read_shape(numbered)
    separated = copy.deepcopy(tokenizer)  # a separator from the third message on
    separated.chat_template = ("{% for m in messages %}{% if loop.index > 2 %}---{% endif %}"
                               "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")
    with pytest.raises(DeployError, match=r"^chat template is not a fixed text around each "
                                          r"message \(it renders a conversation of 3 messages"):
        ollama.read_shape(separated)


def test_a_tokenizer_without_a_chat_template_is_refused(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(DeployError, match="^tokenizer has no chat template"):
        ollama.read_shape(bare)
