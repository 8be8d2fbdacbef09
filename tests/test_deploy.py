"""GGUF export with llama.cpp's own tools, run by llama.cpp itself (tunelab.deploy).

The tiny random model is exported in f32, so precision cannot explain a difference:
llama.cpp must build the same prompt tokens from the GGUF's chat template as the
trainer does, and give the same greedy tokens as transformers.
"""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest
import torch

from tunelab.data import encoding
from tunelab.deploy import gguf_export, llama_runtime
from tunelab.errors import DeployError

PROMPTS = [
    [{"role": "user", "content": "My order ORD-123456 arrived broken. What should I do?"}],
    [{"role": "system", "content": "You triage support tickets."},
     {"role": "user", "content": "Refund please, the app crashes on start."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Café, naïve, 東京: which is a city?"}],
]
NEW_TOKENS = 24
TIE = 0.01  # two logits this close are a tie that fp32 rounding order may break either way


@pytest.fixture(scope="module")
def tiny_gguf(tiny_base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    gguf_export.convert_model(tiny_base_dir, out, "tiny")
    return out


def transformers_greedy(model, ids: list[int], eos_id: int) -> list[int]:
    with torch.no_grad():
        output = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=NEW_TOKENS,
                                do_sample=False, eos_token_id=eos_id, pad_token_id=eos_id)
    return output[0, len(ids):].tolist()


def assert_same_greedy_tokens(model, prompt: list[int], expected: list[int],
                              got: list[int]) -> None:
    """``got`` equals ``expected`` up to the first step where transformers' two best logits
    lie within TIE of each other: there a float rounding may pick either, and after it the
    answers part ways. Anywhere else a difference is a real one."""
    step = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
    if step is None:
        assert len(got) == len(expected)
        return
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + expected[:step]])).logits[0, -1]
    best, second = torch.topk(logits, 2).values.tolist()
    assert best - second < TIE, (f"step {step}: llama.cpp chose {got[step]}, transformers "
                                 f"{expected[step]} with a margin of {best - second:.4f}")
    assert logits[got[step]].item() == second  # llama.cpp took the runner-up of the tie


def llama_greedy(gguf_file, prompts, lora=None) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt tokens llama.cpp builds, its greedy tokens) per conversation."""
    with contextlib.closing(llama_runtime.load(gguf_file, context=256, threads=2,
                                               lora=lora)) as llm:
        built = [llama_runtime.chat_prompt_tokens(llm, messages) for messages in prompts]
        return built, [llama_runtime.generate(llm, ids, NEW_TOKENS).token_ids for ids in built]


def test_f32_gguf_gives_the_trainers_prompt_tokens_and_transformers_greedy_tokens(
        tiny_base_dir, tiny_gguf, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32).eval()
    trainer_prompts = [encoding.chat_ids(tokenizer, m, add_generation_prompt=True)
                       for m in PROMPTS]
    built, generated = llama_greedy(tiny_gguf, PROMPTS)
    assert built == trainer_prompts
    for prompt, got in zip(trainer_prompts, generated):
        expected = transformers_greedy(model, prompt, tokenizer.eos_token_id)
        assert_same_greedy_tokens(model, prompt, expected, got)
    assert all(len(ids) == NEW_TOKENS for ids in generated)  # random weights: no early EOS


def test_lora_gguf_on_the_base_gguf_gives_the_adapter_models_greedy_tokens(
        tiny_base_dir, tiny_gguf, make_tiny_adapter, tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = make_tiny_adapter("for-gguf", r=4, seed=3)
    lora_file = tmp_path / "adapter-f32.gguf"
    gguf_export.convert_lora(adapter, tiny_base_dir, lora_file)
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
    trainer_prompts = [encoding.chat_ids(tokenizer, m, add_generation_prompt=True)
                       for m in PROMPTS]
    _, generated = llama_greedy(tiny_gguf, PROMPTS, lora=lora_file)
    _, without = llama_greedy(tiny_gguf, PROMPTS)
    for prompt, got in zip(trainer_prompts, generated):
        expected = transformers_greedy(tuned, prompt, tokenizer.eos_token_id)
        assert_same_greedy_tokens(tuned, prompt, expected, got)
    assert all(a[0] != b[0] for a, b in zip(generated, without))  # the adapter changes answers


def test_every_quantization_loads_and_answers(tiny_gguf, tmp_path):
    sizes = {}
    for name in ("f16", "q8_0", "q4_k_m"):
        out = tmp_path / f"tiny-{name}.gguf"
        gguf_export.quantize(tiny_gguf, out, name)
        sizes[name] = out.stat().st_size
        _, generated = llama_greedy(out, PROMPTS[:1])
        assert len(generated[0]) == NEW_TOKENS
    assert tiny_gguf.stat().st_size > sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"]


def test_an_unknown_type_is_named():
    with pytest.raises(DeployError, match=r"^export.quantizations: llama.cpp knows no type "
                                          r"'q9_k'$"):
        gguf_export.file_type("q9_k")


def test_an_architecture_the_converter_does_not_support_is_named(tiny_base_dir, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(tiny_base_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["NotARealModelForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DeployError) as raised:
        gguf_export.convert_model(folder, tmp_path / "odd.gguf", "odd")
    assert str(raised.value) == (f"{folder}: llama.cpp's convert_hf_to_gguf.py failed: "
                                 "architecture NotARealModelForCausalLM is not supported by the "
                                 "converter")
    assert not (tmp_path / "odd.gguf").exists()


def test_a_file_llama_cpp_cannot_load_is_one_line(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(DeployError) as raised:
        llama_runtime.load(broken)
    assert str(raised.value).startswith(f"{broken}: llama.cpp cannot load this GGUF file (")
    assert "\n" not in str(raised.value)
    with pytest.raises(DeployError, match="GGUF file not found"):
        llama_runtime.load(tmp_path / "missing.gguf")


def test_missing_convert_scripts_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv(gguf_export.TOOLS_ENV, str(tmp_path))
    with pytest.raises(DeployError, match=r"convert_hf_to_gguf.py is not there; run `make setup`"):
        gguf_export.tools_dir()


# ggml's x86 CPU backends the wheel ships (tunelab/deploy/llama_wheel.py KEEP), most capable
# first, with the /proc/cpuinfo flags each needs (ggml-cpu/arch/x86/cpu-feats.cpp's score:
# every feature a backend was compiled for must be there; the highest score wins).
HASWELL = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
SKYLAKEX = HASWELL | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
ICELAKE = SKYLAKEX | {"avx512vbmi", "avx512_vnni"}
ZEN4 = ICELAKE | {"avx512_bf16"}
CPU_LEVELS = [("sapphirerapids", ZEN4 | {"amx_int8"}), ("zen4", ZEN4), ("icelake", ICELAKE),
              ("skylakex", SKYLAKEX), ("haswell", HASWELL), ("x64", set())]


def cpu_flags() -> set[str]:
    from pathlib import Path

    text = Path("/proc/cpuinfo").read_text()
    return set(next(line for line in text.splitlines() if line.startswith("flags"))
               .split(":", 1)[1].split())


def test_llama_cpp_runs_the_best_cpu_backend_this_cpu_has():
    """The wheel has one CPU backend per x86 level, and the one loaded is the most capable
    this CPU runs (an AVX2 EPYC: haswell; a Sapphire Rapids Xeon: sapphirerapids)."""
    from llama_cpp.llama_cpp import _base_path

    from tunelab.deploy import llama_wheel

    shipped = sorted(path.name.removeprefix("libggml-cpu-").split(".so")[0]
                     for path in _base_path.glob("libggml-cpu-*.so"))
    assert shipped == sorted(llama_wheel.KEEP)
    flags = cpu_flags()
    expected = next(name for name, needs in CPU_LEVELS if needs <= flags)
    assert llama_runtime.cpu_backend() == expected
    assert llama_runtime.loaded_cpu_variant() == expected


class FakeGgml:
    """ggml's two loader functions, as ctypes exposes them, with ``backends`` registered
    before loading and ``loads`` more after."""

    def __init__(self, backends: int, loads: int):
        self.count, self.loaded_from = backends, None

        def reg_count():
            return self.count

        def load_all_from_path(path):
            self.loaded_from, self.count = path, self.count + loads

        # plain functions: cpu_backend sets their ctypes restype/argtypes attributes
        self.ggml_backend_reg_count = reg_count
        self.ggml_backend_load_all_from_path = load_all_from_path


def fake_ggml(monkeypatch, tmp_path, backends: int, loads: int) -> FakeGgml:
    import llama_cpp.llama_cpp

    fake = FakeGgml(backends, loads)
    monkeypatch.setattr(llama_cpp.llama_cpp, "_lib", fake)
    monkeypatch.setattr(llama_cpp.llama_cpp, "_base_path", tmp_path)
    return fake


def test_a_build_with_the_cpu_backend_linked_in_is_used_as_it_is(monkeypatch, tmp_path):
    fake = fake_ggml(monkeypatch, tmp_path, backends=1, loads=0)
    assert llama_runtime.cpu_backend.__wrapped__() == "built-in"
    assert fake.loaded_from is None


def test_no_cpu_backend_that_loads_is_one_line(monkeypatch, tmp_path):
    fake = fake_ggml(monkeypatch, tmp_path, backends=0, loads=0)
    with pytest.raises(DeployError) as raised:
        llama_runtime.cpu_backend.__wrapped__()
    assert fake.loaded_from == str(tmp_path).encode()
    assert str(raised.value) == (
        f"{tmp_path}: no llama.cpp CPU backend loads on this machine (libggml-cpu-*.so "
        "missing or built for another CPU); rebuild with `make setup`")


# A process that loads one named CPU backend instead of the best, then answers like
# llama_greedy: the backend registry is per process, so this runs in a child.
ONE_BACKEND = """
import json, sys
from llama_cpp.llama_cpp import _base_path, _lib
from tunelab.deploy import llama_runtime
_lib.ggml_backend_load.argtypes = [__import__("ctypes").c_char_p]
_lib.ggml_backend_load(str(_base_path / f"libggml-cpu-{sys.argv[1]}.so").encode())
print(llama_runtime.cpu_backend(), file=sys.stderr)  # one registered already: "built-in"
llm = llama_runtime.load(sys.argv[2], context=256, threads=2)
prompts = json.loads(sys.argv[3])
ids = [llama_runtime.chat_prompt_tokens(llm, messages) for messages in prompts]
print(json.dumps([llama_runtime.generate(llm, p, int(sys.argv[4])).token_ids for p in ids]))
"""


def test_the_portable_x64_backend_gives_transformers_greedy_tokens(tiny_base_dir, tiny_gguf,
                                                                  tokenizer):
    """A CPU without AVX2 gets libggml-cpu-x64.so: it must compute the same model (up to a
    tie), or the wheel that "runs on every x86-64 box" runs wrong there."""
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    done = subprocess.run([sys.executable, "-c", ONE_BACKEND, "x64", str(tiny_gguf),
                           json.dumps(PROMPTS), str(NEW_TOKENS)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "libggml-cpu-x64.so" in done.stderr  # ggml's own line: which library it loaded
    assert "built-in" in done.stderr.splitlines()  # cpu_backend left a loaded backend alone
    generated = json.loads(done.stdout.splitlines()[-1])
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32).eval()
    for messages, got in zip(PROMPTS, generated):
        prompt = encoding.chat_ids(tokenizer, messages, add_generation_prompt=True)
        expected = transformers_greedy(model, prompt, tokenizer.eos_token_id)
        assert_same_greedy_tokens(model, prompt, expected, got)
