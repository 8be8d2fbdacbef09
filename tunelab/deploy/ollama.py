"""An Ollama ``Modelfile`` whose TEMPLATE renders the prompt the model was trained on.

Ollama writes prompts with Go's text/template, not Jinja, so the tokenizer's chat
template cannot be copied over. Two shapes of template are written as Go:

- Role wrappers: each message wrapped in a fixed text per role (ChatML:
  ``<|im_start|>user\\n`` ... ``<|im_end|>\\n``), maybe a default system message when
  there is none, and a generation prompt. The pieces are read off the tokenizer's own
  template by rendering marker messages; an assistant turn's wrappers are read from a turn
  in the history, as a prompt holds them (Qwen3 writes its think block only into the turn
  being answered, never into a prompt).
- A system text folded into the first user turn (Gemma, Llama 2, Mistral): the fixed texts
  come from the family table (tunelab.chat.families), filled with the tokenizer's BOS/EOS.

Either way the pieces must rebuild the Jinja template's text exactly for a set of
conversations (one or more turns, with and without a system message, and the run's own
prompts); a template that neither shape rebuilds fails the export in one line naming the
family it is closest to, rather than shipping a Modelfile that prompts the model
differently. Ollama's runner adds BOS itself where the GGUF says so (as the tokenizer
does), so the TEMPLATE leaves out a leading BOS the Jinja template writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tunelab.chat import families
from tunelab.chat.families import Folded
from tunelab.errors import DeployError

ROLES = ("system", "user", "assistant")
# Marker texts no template changes: no surrounding whitespace (Llama 3 and Gemma 3 trim
# message text, and Python's strip() takes control characters such as \x1f too).
MARKS = {"system": "tunelab-system-text", "user": "tunelab-user-text",
         "assistant": "tunelab-assistant-text"}
SECOND_USER = "tunelab-second-user-text"
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

    def go(self) -> str:
        """A Go text/template over Ollama's ``.Messages`` that renders like this shape.

        No ``{{-``/``-}}`` trimming: it would eat the newlines the wrappers end with.
        """
        branches = "".join(
            f'{{{{ {"if" if i == 0 else "else if"} eq $m.Role "{role}" }}}}'
            f"{go_literal(self.prefix[role])}{{{{ $m.Content }}}}{go_literal(self.suffix[role])}"
            for i, role in enumerate(ROLES))
        default = (f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}'
                   f"{go_literal(self.default_system)}{{{{ end }}}}") if self.default_system else ""
        return (f"{{{{ range $i, $m := .Messages }}}}{default}{branches}{{{{ end }}}}{{{{ end }}}}"
                f"{go_literal(self.generation_prompt)}")

    def stop_text(self) -> str:
        return self.suffix["assistant"].strip()


@dataclass
class FoldedShape:
    """A template that writes the first system text inside the first user turn."""
    family: str
    pieces: Folded

    def render(self, messages: list[dict]) -> str:
        p = self.pieces
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        text, first_user = p.head, True
        for message in messages:
            if message["role"] == "user":
                text += p.user_prefix
                if first_user and system:
                    text += p.fold_prefix + system + p.fold_suffix
                first_user = False
                text += message["content"] + p.user_suffix
            elif message["role"] == "assistant":
                text += p.assistant_prefix + message["content"] + p.assistant_suffix
        return text + p.generation_prompt

    def go(self) -> str:
        """The same as a Go template: the first message's text, if it is a system message,
        goes into the first user turn; other system messages are not written."""
        p = {name: go_literal(text) for name, text in vars(self.pieces).items()}
        return ('{{ $system := "" }}{{ $first := true }}'
                '{{ if .Messages }}{{ with index .Messages 0 }}{{ if eq .Role "system" }}'
                '{{ $system = .Content }}{{ end }}{{ end }}{{ end }}'
                f'{p["head"]}{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{p["user_prefix"]}'
                f'{{{{ if and $first $system }}}}{p["fold_prefix"]}{{{{ $system }}}}{p["fold_suffix"]}'
                f'{{{{ end }}}}{{{{ $first = false }}}}{{{{ .Content }}}}{p["user_suffix"]}'
                f'{{{{ else if eq .Role "assistant" }}}}{p["assistant_prefix"]}{{{{ .Content }}}}'
                f'{p["assistant_suffix"]}{{{{ end }}}}{{{{ end }}}}{p["generation_prompt"]}')

    def stop_text(self) -> str:
        return ""


def render_jinja(tokenizer, messages: list[dict], generation_prompt: bool = True) -> str:
    """The chat template's text as Ollama's TEMPLATE must write it: without a leading BOS
    where the runner adds one."""
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt)
    if families.adds_bos(tokenizer) and text.startswith(tokenizer.bos_token):
        return text[len(tokenizer.bos_token):]
    return text


def read_shape(tokenizer, check_with: list[list[dict]] = ()) -> ChatShape | FoldedShape:
    """The shape of ``tokenizer``'s chat template that rebuilds its text on the probes and
    on ``check_with``: its role wrappers, else a registered family's folded shape;
    DeployError naming the closest family when neither does."""
    if not tokenizer.chat_template:
        raise DeployError("tokenizer has no chat template: an Ollama TEMPLATE cannot be written")
    conversations = [*PROBES, *check_with]
    try:
        shape = role_wrappers(tokenizer)
        differs = first_difference(shape, tokenizer, conversations)
        if differs is None:
            return shape
        reason = (f"is not a fixed text around each message (it renders a conversation of "
                  f"{len(differs)} messages otherwise)")
    except Unlike as err:
        reason = str(err)
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    for family in families.FAMILIES.values():
        if family.folded:
            pieces = family.folded.filled(bos, eos)
            if families.adds_bos(tokenizer):  # the runner writes the leading BOS (render_jinja)
                pieces = Folded(**{**vars(pieces), "head": pieces.head.removeprefix(bos)})
            folded = FoldedShape(family.name, pieces)
            if first_difference(folded, tokenizer, conversations) is None:
                return folded
    closest = families.recognise(tokenizer.chat_template)
    raise DeployError(f"chat template {reason}, and no registered family's Ollama template "
                      f"renders it (closest family: {closest.name if closest else 'none'}): "
                      "an Ollama TEMPLATE cannot reproduce it")


def first_difference(shape, tokenizer, conversations: list[list[dict]]) -> list[dict] | None:
    """The first conversation ``shape`` renders otherwise than the Jinja template; None."""
    for messages in conversations:
        if shape.render(messages) != render_jinja(tokenizer, messages):
            return messages
    return None


class Unlike(ValueError):
    """The template is not of the role-wrapper shape; the message says how."""


def role_wrappers(tokenizer) -> ChatShape:
    """The fixed texts around each message of the template, read off marker messages
    (Unlike when the template writes a marker message otherwise)."""
    system, user, assistant = ({"role": role, "content": MARKS[role]} for role in ROLES)

    def split(text: str, role: str) -> tuple[str, str]:
        before, found, after = text.partition(MARKS[role])
        if not found:
            raise Unlike(f"leaves out the text of a lone {role} message")
        return before, after

    # [system] alone: its prefix and suffix.
    sys_prefix, sys_suffix = split(render_jinja(tokenizer, [system], False), "system")
    # [system, user]: the user prefix follows the system block.
    head, user_suffix = split(render_jinja(tokenizer, [system, user], False), "user")
    if not head.startswith(sys_prefix + MARKS["system"] + sys_suffix):
        raise Unlike("writes the system message differently when a user message follows")
    user_prefix = head[len(sys_prefix + MARKS["system"] + sys_suffix):]
    # [user] alone: whatever comes before the user prefix is the default system message.
    head, _ = split(render_jinja(tokenizer, [user], False), "user")
    if not head.endswith(user_prefix):
        raise Unlike("writes the first user message differently without a system message")
    default_system = head[:len(head) - len(user_prefix)]
    # [system, user, assistant, user]: the wrappers of an assistant turn in the history,
    # between the first user turn's suffix and the second user turn's prefix.
    history = render_jinja(tokenizer, [system, user, assistant, {**user, "content": SECOND_USER}],
                           False)
    head, assistant_tail = split(history, "assistant")
    assistant_prefix = head.split(MARKS["user"] + user_suffix, 1)[-1]
    assistant_suffix, found, _ = assistant_tail.partition(user_prefix + SECOND_USER)
    if not found:
        raise Unlike("writes a later user message differently from the first")
    prompt_only = render_jinja(tokenizer, [system, user], False)
    with_prompt = render_jinja(tokenizer, [system, user], True)
    return ChatShape(prefix={"system": sys_prefix, "user": user_prefix,
                             "assistant": assistant_prefix},
                     suffix={"system": sys_suffix, "user": user_suffix,
                             "assistant": assistant_suffix},
                     default_system=default_system,
                     generation_prompt=with_prompt[len(prompt_only):])


def go_literal(text: str) -> str:
    """``text`` as literal Go-template text: only ``{{`` needs escaping."""
    return text.replace("{{", '{{ "{{" }}')


def stop_words(shape: ChatShape | FoldedShape, stop_texts: list[str]) -> list[str]:
    """What ends an answer: the stop ids' texts (tunelab.chat.stops) and, for role
    wrappers, the assistant suffix without surrounding whitespace."""
    return list(dict.fromkeys(word for word in [*stop_texts, shape.stop_text()] if word))


def quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise DeployError(f'{what} contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile(gguf_name: str, shape: ChatShape | FoldedShape, stop_texts: list[str],
              system_prompt: str, max_new_tokens: int) -> str:
    """The Modelfile text, for a GGUF file in the same folder."""
    lines = ["# Ollama: ollama create NAME -f Modelfile   (then: ollama run NAME)",
             "# Written by tunelab's export stage; TEMPLATE renders the training prompt.",
             f"FROM ./{gguf_name}",
             f"TEMPLATE {quoted(shape.go(), 'the chat template')}"]
    lines += [f"PARAMETER stop {json.dumps(word)}" for word in stop_words(shape, stop_texts)]
    lines += ["# Greedy, as the evaluation decoded (raise temperature for varied answers).",
              "PARAMETER temperature 0",
              f"PARAMETER num_predict {max_new_tokens}"]
    if system_prompt:
        lines.append(f"SYSTEM {quoted(system_prompt, 'prepare.system_prompt')}")
    return "\n".join(lines) + "\n"
