"""The model families tunelab knows, each registered once with all its facts side by side.

``model.chat_template: NAME`` puts a family's template (tunelab's copy, written from the
family's published format) into models/base; ``auto`` keeps the tokenizer's own, and
``recognise`` tells which family any template is closest to, for messages. A family's
facts:

- ``jinja``: the chat template. It reads ``reasoning_content`` where the family has a
  think block, writes the tokenizer's own BOS/EOS text where the family writes them, and
  never trims message text (Ollama's Go templates cannot trim, so a trimming template
  could not be reproduced there for text with surrounding whitespace).
- ``special_tokens``: texts the template writes that must be one token each; the base
  stage adds those the vocabulary lacks (tunelab.models.source).
- ``think``: the reasoning block's opening and closing text, or None.
- ``folded``: for templates that write the system text inside the first user turn
  (Gemma, Llama 2, Mistral), the fixed texts an Ollama Go template rebuilds them from
  (tunelab.deploy.ollama); None where the template wraps each message in fixed text per
  role, which tunelab.deploy.ollama reads off the template itself.
- ``markers``: texts only this family's templates write, to recognise one.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.util.names import did_you_mean


@dataclass(frozen=True)
class Folded:
    """The fixed texts of a template that folds the system text into the first user turn.
    ``{bos}``/``{eos}`` stand for the tokenizer's own BOS/EOS text.

    A prompt is ``head``, then each user turn as ``user_prefix`` + (first user turn with a
    system message: ``fold_prefix`` + system + ``fold_suffix``) + text + ``user_suffix``,
    each assistant turn as ``assistant_prefix`` + text + ``assistant_suffix``, then
    ``generation_prompt``."""
    head: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    fold_prefix: str
    fold_suffix: str
    generation_prompt: str

    def filled(self, bos: str, eos: str) -> "Folded":
        """These texts with the tokenizer's BOS and EOS text in place of the placeholders."""
        return Folded(**{name: text.replace("{bos}", bos).replace("{eos}", eos)
                         for name, text in vars(self).items()})


@dataclass(frozen=True)
class Family:
    name: str
    models: str                      # who uses it, for messages and the docs
    jinja: str
    special_tokens: tuple[str, ...] = ()
    think: tuple[str, str] | None = None
    folded: Folded | None = None
    markers: tuple[str, ...] = ()


# Written once per family; `{%- ... %}` everywhere so the template adds no stray newlines.
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# Qwen3's rule: an assistant turn after the last user message (the answer being trained)
# writes a think block, empty when the turn has no reasoning; earlier turns write none
# unless they carry reasoning after the last user message. enable_thinking=false puts the
# empty block into the generation prompt, as Qwen3's own template does.
QWEN3 = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set reasoning = message['reasoning_content'] if message['reasoning_content'] is defined"
    " and message['reasoning_content'] is not none else '' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if loop.index0 > ns.last_user and (loop.last or reasoning) %}"
    "{{- '<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' }}{%- endif %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")

LLAMA3 = (
    "{{- bos_token if bos_token else '' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}")

# The system text (if any) is taken out of the list and written inside the first turn.
_SPLIT_SYSTEM = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set loop_messages = messages %}{%- endif %}")

GEMMA = (
    "{{- bos_token if bos_token else '' }}" + _SPLIT_SYSTEM +
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' }}"
    "{%- if loop.first and system %}{{- system + '\\n\\n' }}{%- endif %}"
    "{{- message['content'] + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}")

LLAMA2 = (
    _SPLIT_SYSTEM +
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{{- (bos_token if bos_token else '') + '[INST] ' }}"
    "{%- if loop.first and system %}{{- '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{%- endif %}"
    "{{- message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' ' + message['content'] + ' ' + eos_token }}{%- endif %}"
    "{%- endfor %}")

MISTRAL = (
    "{{- bos_token if bos_token else '' }}" + _SPLIT_SYSTEM +
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' }}"
    "{%- if loop.first and system %}{{- system + '\\n\\n' }}{%- endif %}"
    "{{- message['content'] + ' [/INST]' }}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}")

PHI3 = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}")

ALPACA_SYSTEM = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
ALPACA = (
    "{{- bos_token if bos_token else '' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{{- '" + ALPACA_SYSTEM + "\\n\\n' }}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}{{- '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{%- else %}{{- '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '### Response:\\n' }}{%- endif %}")

FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("chatml", "SmolLM2, Qwen2.5, Hermes, OpenHermes, many fine-tunes", CHATML,
           ("<|im_start|>", "<|im_end|>"), markers=("<|im_start|>",)),
    Family("qwen3", "Qwen3 (ChatML with a <think> block)", QWEN3,
           ("<|im_start|>", "<|im_end|>", "<think>", "</think>"), think=("<think>", "</think>"),
           markers=("<|im_start|>", "<think>")),
    Family("llama3", "Llama 3, 3.1, 3.2, 3.3", LLAMA3,
           ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
           markers=("<|start_header_id|>", "<|eot_id|>")),
    Family("gemma", "Gemma, Gemma 2, Gemma 3 (text)", GEMMA, ("<start_of_turn>", "<end_of_turn>"),
           folded=Folded(head="{bos}", user_prefix="<start_of_turn>user\n",
                         user_suffix="<end_of_turn>\n", assistant_prefix="<start_of_turn>model\n",
                         assistant_suffix="<end_of_turn>\n", fold_prefix="", fold_suffix="\n\n",
                         generation_prompt="<start_of_turn>model\n"),
           markers=("<start_of_turn>",)),
    Family("llama2", "Llama 2 chat, and base models given its format", LLAMA2,
           # Every turn starts with BOS; in a prompt, every one after the first follows an
           # answer, so that BOS is written as the end of the answer's suffix.
           folded=Folded(head="{bos}", user_prefix="[INST] ", user_suffix=" [/INST]",
                         assistant_prefix=" ", assistant_suffix=" {eos}{bos}",
                         fold_prefix="<<SYS>>\n", fold_suffix="\n<</SYS>>\n\n",
                         generation_prompt=""),
           markers=("[INST]", "<<SYS>>")),
    Family("mistral", "Mistral 7B Instruct, Mixtral (v1 format)", MISTRAL,
           folded=Folded(head="{bos}", user_prefix="[INST] ", user_suffix=" [/INST]",
                         assistant_prefix="", assistant_suffix="{eos}", fold_prefix="",
                         fold_suffix="\n\n", generation_prompt=""),
           markers=("[INST]",)),
    Family("phi3", "Phi-3, Phi-3.5", PHI3, ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
           markers=("<|end|>", "<|assistant|>")),
    Family("alpaca", "Alpaca-style instruction format, for base models", ALPACA,
           markers=("### Instruction:", "### Response:")),
)}


def family(name: str) -> Family:
    """The family registered as ``name``; KeyError with a did-you-mean line otherwise."""
    if name not in FAMILIES:
        raise KeyError(f"unknown chat template {name!r}{did_you_mean(name, FAMILIES)} "
                       f"(use auto, a .jinja file, or one of {', '.join(FAMILIES)})")
    return FAMILIES[name]


def recognise(template: str | None) -> Family | None:
    """The family whose markers ``template`` writes most of (the more specific family
    first: Qwen3 before ChatML, Llama 2 before Mistral); None when it writes none."""
    if not template:
        return None
    scored = [(sum(marker in template for marker in f.markers), len(f.markers), f)
              for f in FAMILIES.values()]
    best = max(scored, key=lambda row: (row[0], row[0] == row[1]))
    return best[2] if best[0] else None


def adds_bos(tokenizer) -> bool:
    """Whether encoding text adds BOS, as llama.cpp (and so Ollama's runner) then does."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
