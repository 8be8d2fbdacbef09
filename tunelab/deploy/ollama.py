"""An Ollama ``Modelfile`` whose TEMPLATE renders the prompt the model was trained on.

Ollama writes prompts with Go's text/template, not Jinja, so the tokenizer's chat
template cannot be copied over. Most chat templates wrap each message in a fixed
text per role (ChatML: ``<|im_start|>user\\n`` ... ``<|im_end|>\\n``), may write a default
system message when there is none, and end with a generation prompt. Those pieces are
read off the tokenizer's own template by rendering marker messages, written as a Go
template over Ollama's ``.Messages``, and then checked: the pieces must rebuild the
Jinja template's text exactly for a set of conversations (one or more turns, with and
without a system message, and the run's own prompts). A template that is not of this
shape (one that moves the system text into the first user turn, say) fails the export
with one line rather than shipping a Modelfile that prompts the model differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tunelab.errors import DeployError

ROLES = ("system", "user", "assistant")
MARKS = {"system": "\x1fSYSTEM-TEXT\x1f", "user": "\x1fUSER-TEXT\x1f",
         "assistant": "\x1fASSISTANT-TEXT\x1f"}
# Conversations the pieces must rebuild exactly (plus the caller's own).
PROBES = (
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Name a colour.\nOne word."}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
)


@dataclass
class ChatShape:
    """The fixed texts around each message of a chat template."""
    prefix: dict[str, str]
    suffix: dict[str, str]
    default_system: str       # written first when the conversation has no system message
    generation_prompt: str    # written after the last message, where the answer starts

    def render(self, messages: list[dict]) -> str:
        """The prompt these pieces make; must equal the Jinja template's."""
        text = "" if messages and messages[0]["role"] == "system" else self.default_system
        for message in messages:
            role = message["role"]
            text += self.prefix[role] + message["content"] + self.suffix[role]
        return text + self.generation_prompt


def render_jinja(tokenizer, messages: list[dict], generation_prompt: bool = True) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def read_shape(tokenizer, check_with: list[list[dict]] = ()) -> ChatShape:
    """The role wrappers of ``tokenizer``'s chat template, checked on the probes and on
    ``check_with``; DeployError when the template is not of that shape."""
    if not tokenizer.chat_template:
        raise DeployError("tokenizer has no chat template: an Ollama TEMPLATE cannot be written")
    system, user, assistant = ({"role": role, "content": MARKS[role]} for role in ROLES)

    def split(text: str, role: str) -> tuple[str, str]:
        before, found, after = text.partition(MARKS[role])
        if not found:
            raise unlike(f"leaves out the text of a lone {role} message")
        return before, after

    # [system] alone: its prefix and suffix.
    sys_prefix, sys_suffix = split(render_jinja(tokenizer, [system], False), "system")
    # [system, user]: the user prefix follows the system block.
    head, user_suffix = split(render_jinja(tokenizer, [system, user], False), "user")
    if not head.startswith(sys_prefix + MARKS["system"] + sys_suffix):
        raise unlike("writes the system message differently when a user message follows")
    user_prefix = head[len(sys_prefix + MARKS["system"] + sys_suffix):]
    # [user] alone: whatever comes before the user prefix is the default system message.
    head, _ = split(render_jinja(tokenizer, [user], False), "user")
    if not head.endswith(user_prefix):
        raise unlike("writes the first user message differently without a system message")
    default_system = head[:len(head) - len(user_prefix)]
    # [system, user, assistant]: the assistant's wrappers.
    with_answer = render_jinja(tokenizer, [system, user, assistant], False)
    head, assistant_suffix = split(with_answer, "assistant")
    assistant_prefix = head.split(MARKS["user"] + user_suffix, 1)[-1]
    prompt_only = render_jinja(tokenizer, [system, user], False)
    with_prompt = render_jinja(tokenizer, [system, user], True)
    shape = ChatShape(prefix={"system": sys_prefix, "user": user_prefix,
                              "assistant": assistant_prefix},
                      suffix={"system": sys_suffix, "user": user_suffix,
                              "assistant": assistant_suffix},
                      default_system=default_system,
                      generation_prompt=with_prompt[len(prompt_only):])
    for messages in [*PROBES, *check_with]:
        if shape.render(messages) != render_jinja(tokenizer, messages):
            raise unlike(f"is not a fixed text around each message (it renders a "
                         f"conversation of {len(messages)} messages otherwise)")
    return shape


def unlike(reason: str) -> DeployError:
    return DeployError(f"chat template {reason}: an Ollama TEMPLATE cannot reproduce it")


def go_literal(text: str) -> str:
    """``text`` as literal Go-template text: only ``{{`` needs escaping."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(shape: ChatShape) -> str:
    """A Go text/template over Ollama's ``.Messages`` that renders like ``shape``.

    No ``{{-``/``-}}`` trimming: it would eat the newlines the wrappers end with.
    """
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq $m.Role "{role}" }}}}'
        f"{go_literal(shape.prefix[role])}{{{{ $m.Content }}}}{go_literal(shape.suffix[role])}"
        for i, role in enumerate(ROLES))
    default = (f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}'
               f"{go_literal(shape.default_system)}{{{{ end }}}}") if shape.default_system else ""
    return (f"{{{{ range $i, $m := .Messages }}}}{default}{branches}{{{{ end }}}}{{{{ end }}}}"
            f"{go_literal(shape.generation_prompt)}")


def stop_words(shape: ChatShape, eos_token: str | None) -> list[str]:
    """What ends an answer: the assistant suffix without trailing whitespace, and EOS."""
    words = [shape.suffix["assistant"].strip(), eos_token or ""]
    return list(dict.fromkeys(word for word in words if word))


def quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise DeployError(f'{what} contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile(gguf_name: str, shape: ChatShape, eos_token: str | None, system_prompt: str,
              max_new_tokens: int) -> str:
    """The Modelfile text, for a GGUF file in the same folder."""
    lines = ["# Ollama: ollama create NAME -f Modelfile   (then: ollama run NAME)",
             "# Written by tunelab's export stage; TEMPLATE renders the training prompt.",
             f"FROM ./{gguf_name}",
             f"TEMPLATE {quoted(go_template(shape), 'the chat template')}"]
    lines += [f"PARAMETER stop {json.dumps(word)}" for word in stop_words(shape, eos_token)]
    lines += ["# Greedy, as the evaluation decoded (raise temperature for varied answers).",
              "PARAMETER temperature 0",
              f"PARAMETER num_predict {max_new_tokens}"]
    if system_prompt:
        lines.append(f"SYSTEM {quoted(system_prompt, 'prepare.system_prompt')}")
    return "\n".join(lines) + "\n"
