"""Run a GGUF file with llama.cpp (llama-cpp-python): load, build chat prompts, generate.

One module for the parity check and `tunelab serve --gguf`, so what is served is what
was checked. Chat prompts are built the way llama-cpp-python's own chat completion
does from a GGUF: the ``tokenizer.chat_template`` stored in the file, rendered by its
``Jinja2ChatFormatter`` with the file's BOS/EOS texts, then tokenized with special
tokens parsed and no extra BOS (the template writes any it wants). Generation stops at
any end-of-generation token of the vocabulary (llama.cpp's ``llama_vocab_is_eog``);
that token is returned with the others, as transformers' ``generate`` returns EOS.
A llama.cpp context is not thread-safe: callers use one model from one thread at a time.

The CPU kernels are picked at run time (``cpu_backend``): `make setup` builds ggml's CPU
backend once per x86 level, and the best one this CPU runs is loaded before any model.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tunelab.data import tool_calls
from tunelab.errors import DeployError

DEFAULT_CONTEXT = 2048  # tokens of KV cache; raise it for long prompts (memory grows with it)


@dataclass
class Generation:
    token_ids: list[int]      # generated ids, the end-of-generation token included
    text: str                 # decoded, special tokens left out, stripped
    seconds: float            # wall time of prompt processing plus generation


@functools.cache
def cpu_backend() -> str:
    """Load llama.cpp's CPU backend, once per process and before any model; returns its name.

    `make setup` builds ggml with GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS: one library per
    x86 level (libggml-cpu-x64.so ... -haswell (AVX2), -skylakex, -icelake, -zen4 (AVX-512),
    -sapphirerapids (AMX)) next to libggml.so, and ggml loads the one with the highest score
    among those this CPU runs. llama-cpp-python 0.3.36 leaves that to llama_backend_init,
    which searches the executable's and the working folder, not the package's, and so finds
    none (abetlen/llama-cpp-python#2069): the package's folder is named here. Returns the
    variant loaded ("haswell"), or "built-in" for a llama.cpp with the CPU backend linked in
    (the loader is not needed and not called)."""
    # llama-cpp-python's handle on libllama (llama_cpp.llama_cpp._lib, the version pinned in
    # requirements.txt) and its folder: a symbol looked up through a dlopen handle comes from
    # that library or its dependencies, so this is the libggml that libllama itself uses (a
    # dlopen of llama_cpp/lib/libggml.so would be a second copy: the wheel stores
    # libggml.so and libggml.so.0 as two files, and only the copy that registered the
    # backend has it).
    from llama_cpp.llama_cpp import _base_path as lib_dir
    from llama_cpp.llama_cpp import _lib as libllama

    libllama.ggml_backend_reg_count.restype = ctypes.c_size_t
    if libllama.ggml_backend_reg_count():
        return "built-in"
    libllama.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    libllama.ggml_backend_load_all_from_path(str(lib_dir).encode())
    if not libllama.ggml_backend_reg_count():
        raise DeployError(f"{lib_dir}: no llama.cpp CPU backend loads on this machine "
                          "(libggml-cpu-*.so missing or built for another CPU); rebuild with "
                          "`make setup`")
    return loaded_cpu_variant()


def loaded_cpu_variant() -> str:
    """The libggml-cpu-VARIANT.so this process has mapped (Linux's /proc/self/maps);
    "unknown" where that cannot be read."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    found = re.search(r"libggml-cpu-([\w.]+?)\.so", maps)
    return found.group(1) if found else "unknown"


def load(path: str | Path, context: int = DEFAULT_CONTEXT, threads: int | None = None,
         lora: str | Path | None = None):
    """A ``llama_cpp.Llama`` for ``path`` (plus a GGUF LoRA); one line naming the file if
    it cannot load."""
    from llama_cpp import Llama

    cpu_backend()
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"{path}: GGUF file not found")
    if lora is not None and not Path(lora).is_file():
        raise DeployError(f"{lora}: GGUF LoRA file not found")
    try:
        # seed fixed: sampled answers repeat for the same request seed (set per request).
        return Llama(model_path=str(path), n_ctx=context, n_threads=threads or os.cpu_count(),
                     n_threads_batch=threads or os.cpu_count(), seed=0, verbose=False,
                     lora_path=str(lora) if lora else None)
    except (ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DeployError(f"{path}: llama.cpp cannot load this GGUF file ({reason})") from None


def metadata(path: str | Path) -> dict[str, str]:
    """The GGUF's metadata values that are not arrays, read by llama.cpp with the vocabulary
    only (no tensors): ~1 s for a 262k-token vocabulary, where gguf-py's GGUFReader parses
    every token string in Python (~25 s)."""
    from llama_cpp import Llama

    cpu_backend()
    return dict(Llama(model_path=str(path), vocab_only=True, verbose=False).metadata)


def context_size(llm) -> int:
    """Tokens a prompt plus its answer may fill. llama.cpp rounds the context it allocates
    up (to 256 tokens), but llama-cpp-python sizes its token buffer to the one asked for."""
    return min(llm.n_ctx(), llm.context_params.n_ctx)


def chat_template(llm) -> str:
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise DeployError(f"{llm.model_path}: the GGUF file has no tokenizer.chat_template; "
                          "chat prompts cannot be built (use completions with raw text)")
    return template


def chat_prompt_tokens(llm, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Prompt token ids for ``messages``, ending where the assistant's answer starts; tools
    and tool calls rendered by the function training uses (tool_calls.for_template)."""
    model = llm._model  # llama-cpp-python's own handler reads the BOS/EOS text from here
    eos, bos = llm.token_eos(), llm.token_bos()
    template = chat_template(llm)
    formatter = chat_formatter(template, model.token_get_text(eos) if eos != -1 else "",
                               model.token_get_text(bos) if bos != -1 else "")
    messages, tools = tool_calls.for_template(
        messages, tools, template, lambda probe, probe_tools: formatter(
            messages=probe, tools=probe_tools).prompt)
    rendered = formatter(messages=messages, tools=tools)
    return text_tokens(llm, rendered.prompt, add_bos=not rendered.added_special)


@functools.lru_cache(maxsize=16)
def chat_formatter(template: str, eos_token: str, bos_token: str):
    """llama-cpp-python's formatter for a template: compiling the Jinja costs more than
    rendering it, and the server and the parity check render one template many times."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token,
                               add_generation_prompt=True)


def text_tokens(llm, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of raw text (special tokens parsed); ``add_bos``: as the model's vocab says."""
    return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)


def decode(llm, token_ids: list[int]) -> str:
    """Text of ``token_ids`` without special tokens (a split UTF-8 character shows as U+FFFD)."""
    return llm.detokenize(token_ids, special=False).decode("utf-8", errors="replace")


def is_end_of_generation(llm, token_id: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model),
                                             token_id))


def stream_ids(llm, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None, grammar=None,
               cancelled: Callable[[], bool] = lambda: False) -> Iterator[int]:
    """Generated token ids one by one: greedy when ``temperature`` or ``top_p`` is 0, else
    plain temperature + nucleus sampling (no top-k, min-p or repeat penalty, as OpenAI's
    API and transformers' defaults in tunelab). Ends after an end-of-generation token."""
    if len(prompt) + max_new_tokens > context_size(llm):
        raise DeployError(f"prompt ({len(prompt)} tokens) plus {max_new_tokens} new tokens "
                          f"exceed the llama.cpp context of {context_size(llm)} tokens")
    llm.reset()  # no KV-cache reuse from the previous prompt: every answer is computed alike
    if seed is not None:
        llm.set_seed(seed)
    greedy = temperature == 0 or top_p == 0
    sampling = {"temp": 0.0} if greedy else \
        {"temp": temperature, "top_p": top_p, "top_k": 0, "min_p": 0.0}
    produced = 0
    for token_id in llm.generate(prompt, repeat_penalty=1.0, grammar=grammar, **sampling):
        yield token_id
        produced += 1
        if produced >= max_new_tokens or is_end_of_generation(llm, token_id) or cancelled():
            return


def generate(llm, prompt: list[int], max_new_tokens: int, **sampling) -> Generation:
    start = time.perf_counter()
    ids = list(stream_ids(llm, prompt, max_new_tokens, **sampling))
    return Generation(ids, decode(llm, ids).strip(), time.perf_counter() - start)
