"""`tunelab merge` and `tunelab export` on tiny random adapters (seconds)."""

import json
import shutil

import pytest
import torch
from bitsandbytes.functional import has_avx512bf16
from peft import PeftModel
from peft.utils import merge_utils
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tunelab.adapters import export, merge
from tunelab.cli import app as cli
from tunelab.eval import inference
from tunelab.models import loading


@pytest.fixture(scope="module")
def adapters(make_tiny_adapter):
    return {"a": make_tiny_adapter("a", r=4, seed=1), "b": make_tiny_adapter("b", r=4, seed=2),
            "wide": make_tiny_adapter("wide", r=8, seed=3)}


def delta(base_dir, adapter_dir, module="model.layers.0.self_attn.q_proj"):
    """The weight change an adapter makes to one module."""
    peft_model = PeftModel.from_pretrained(loading.load_base(base_dir), str(adapter_dir))
    return peft_model.base_model.model.get_submodule(module).get_delta_weight("default")


@pytest.mark.parametrize("method, rank", [("linear", 4), ("cat", 8), ("ties", 4),
                                          ("dare_ties", 4), ("svd", 4)])
def test_each_method_writes_an_adapter_that_loads_and_generates(
        adapters, tiny_base_dir, tmp_path, method, rank):
    out = tmp_path / "merged"
    code = cli.main(["merge", "--adapters", f"{adapters['a']},{adapters['b']}",
                     "--weights", "0.6,0.4", "--method", method, "--output", str(out)])
    assert code == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == rank and config["base_model_name_or_path"] == str(tiny_base_dir)
    info = json.loads((out / merge.MERGE_INFO).read_text())
    assert info["weights"] == [0.6, 0.4] and info["method"] == method
    assert (out / "tokenizer.json").is_file()
    answer = inference.answer(out, "Say hi", max_new_tokens=4)["tuned"]
    assert isinstance(answer, str)
    assert list(tmp_path.iterdir()) == [out]  # no staging folder left


@pytest.mark.parametrize("method, options", [("cat", []), ("svd", ["--svd-rank", "8"])])
def test_exact_methods_give_the_weighted_sum_of_deltas(adapters, tiny_base_dir, tmp_path,
                                                       method, options):
    out = tmp_path / "merged"
    assert cli.main(["merge", "--adapters", f"{adapters['a']},{adapters['b']}", "--weights",
                     "0.6,0.4", "--method", method, "--output", str(out), *options]) == 0
    expected = 0.6 * delta(tiny_base_dir, adapters["a"]) + 0.4 * delta(tiny_base_dir, adapters["b"])
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(delta(tiny_base_dir, out), expected, atol=1e-5, rtol=1e-4)


# --- merged deltas against a hand computation, every adapted module ------------
# Read straight from the adapter files (no PEFT): delta W = B @ A * lora_alpha / r.
# PEFT's add_weighted_adapter gives the merged adapter lora_alpha = r (scale 1).

WEIGHTS = [0.6, 0.4]


def lora_factors(adapter_dir) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """({module: (A, B)}, scale) from an adapter folder's safetensors and config."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    suffix = ".lora_A.weight"
    factors = {key[:-len(suffix)]: (tensors[key], tensors[key.replace("lora_A", "lora_B")])
               for key in tensors if key.endswith(suffix)}
    return factors, config["lora_alpha"] / config["r"]


def deltas(adapter_dir) -> dict[str, torch.Tensor]:
    factors, scale = lora_factors(adapter_dir)
    return {module: b @ a * scale for module, (a, b) in factors.items()}


def weighted_sum_of_deltas(adapter_dirs, weights) -> dict[str, torch.Tensor]:
    each = [deltas(d) for d in adapter_dirs]
    return {module: sum(w * d[module] for w, d in zip(weights, each)) for module in each[0]}


def ties_by_hand(tensors: list[torch.Tensor], weights: list[float], density: float):
    """TIES as PEFT does it: trim each tensor to its top `density` share by magnitude,
    elect each entry's sign from the sum of the trimmed tensors (0 counts as +), then
    average the weighted trimmed values that have the elected sign."""
    trimmed = []
    for tensor in tensors:
        keep = torch.zeros(tensor.numel())
        keep[tensor.abs().flatten().topk(int(density * tensor.numel())).indices] = 1
        trimmed.append(tensor * keep.view_as(tensor))
    elected = torch.where(sum(trimmed) >= 0, 1.0, -1.0)
    agreeing = [t.sign() == elected for t in trimmed]
    total = sum(w * t * a for w, t, a in zip(weights, trimmed, agreeing))
    return total / sum(a.float() for a in agreeing).clamp(min=1)


def test_ties_by_hand_on_a_two_by_two_example():
    first, second = torch.tensor([[3.0, -1.0], [0.5, 2.0]]), torch.tensor([[1.0, 2.0], [-4.0, 1.0]])
    # density 1: signs + + - + elected; agreeing entries averaged, a lone one kept.
    assert ties_by_hand([first, second], [1.0, 1.0], 1.0).tolist() == [[2.0, 2.0], [-4.0, 1.5]]
    # density 0.5 keeps 3, 2 of the first and -4, 2 of the second.
    assert ties_by_hand([first, second], [1.0, 1.0], 0.5).tolist() == [[3.0, 2.0], [-4.0, 2.0]]
    assert ties_by_hand([first, second], [0.5, 2.0], 0.5).tolist() == [[1.5, 4.0], [-8.0, 1.0]]
    for density in (1.0, 0.5):  # and it is what PEFT computes
        torch.testing.assert_close(
            merge_utils.ties([first, second], torch.tensor([0.5, 2.0]), density),
            ties_by_hand([first, second], [0.5, 2.0], density))


def merged(adapters, tmp_path, method, **options) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{method}-{len(list(tmp_path.iterdir()))}"
    merge.merge([adapters["a"], adapters["b"]], WEIGHTS, method, out, **options)
    return deltas(out)


def assert_same_deltas(actual: dict, expected: dict, atol=1e-6):
    assert actual.keys() == expected.keys() and len(expected) == 6  # 3 modules x 2 layers
    for module, delta in expected.items():
        assert delta.abs().max() > 0.1, module  # a real change, so the check can fail
        torch.testing.assert_close(actual[module], delta, atol=atol, rtol=1e-5, msg=module)


def test_cat_gives_the_weighted_sum_of_deltas_in_every_module(adapters, tmp_path):
    assert_same_deltas(merged(adapters, tmp_path, "cat"),
                       weighted_sum_of_deltas([adapters["a"], adapters["b"]], WEIGHTS))


def test_linear_mixes_a_and_b_separately_so_it_is_not_the_sum_of_deltas(adapters, tmp_path):
    """A = sum_i sqrt(w_i s_i) A_i and B likewise, so B @ A has cross terms B_1 A_2."""
    (factors_a, scale_a), (factors_b, scale_b) = lora_factors(adapters["a"]), \
        lora_factors(adapters["b"])
    root_a, root_b = (WEIGHTS[0] * scale_a) ** 0.5, (WEIGHTS[1] * scale_b) ** 0.5
    expected = {}
    for module, (a1, b1) in factors_a.items():
        a2, b2 = factors_b[module]
        expected[module] = (root_a * b1 + root_b * b2) @ (root_a * a1 + root_b * a2)
    actual = merged(adapters, tmp_path, "linear")
    assert_same_deltas(actual, expected)
    exact = weighted_sum_of_deltas([adapters["a"], adapters["b"]], WEIGHTS)
    assert all((actual[m] - exact[m]).abs().max() > 0.1 for m in exact)


def best_rank_approximation(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert s[rank - 1] - s[rank] > 1e-3 * s[0]  # a gap: the rank-r approximation is unique
    return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]


def test_svd_at_the_default_rank_is_the_truncated_svd_of_the_sum_not_the_sum(adapters,
                                                                              tmp_path):
    """Two rank-4 deltas sum to rank 8; the default --svd-rank is the largest input
    rank (4), so svd keeps the best rank-4 part of the sum and loses the rest."""
    exact = weighted_sum_of_deltas([adapters["a"], adapters["b"]], WEIGHTS)
    assert all(int(torch.linalg.matrix_rank(d)) == 8 for d in exact.values())
    actual = merged(adapters, tmp_path, "svd")
    assert_same_deltas(actual, {m: best_rank_approximation(d, 4) for m, d in exact.items()},
                       atol=1e-5)
    for module, delta in exact.items():
        lost = torch.linalg.svdvals(delta)[4:].square().sum().sqrt()  # Eckart-Young
        assert float(torch.linalg.norm(actual[module] - delta)) == pytest.approx(float(lost),
                                                                                rel=1e-3)
        assert lost > 0.05 * torch.linalg.norm(delta), module


@pytest.mark.parametrize("method, density", [("ties", None), ("ties", 0.3), ("ties", 1.0),
                                             ("dare_ties", 1.0)])
def test_ties_merges_a_and_b_by_trim_elect_and_disjoint_mean(adapters, tmp_path, method,
                                                              density):
    """dare_ties at density 1 drops nothing at random, so it is ties at density 1."""
    (factors_a, scale_a), (factors_b, scale_b) = lora_factors(adapters["a"]), \
        lora_factors(adapters["b"])
    roots = [(WEIGHTS[0] * scale_a) ** 0.5, (WEIGHTS[1] * scale_b) ** 0.5]
    kept = 0.5 if density is None else density  # tunelab's default density
    expected = {}
    for module, (a1, b1) in factors_a.items():
        a2, b2 = factors_b[module]
        expected[module] = ties_by_hand([b1, b2], roots, kept) @ ties_by_hand([a1, a2], roots, kept)
    assert_same_deltas(merged(adapters, tmp_path, method, density=density), expected)


def test_dare_ties_drops_at_random_by_seed_and_rescales_what_it_keeps(adapters, tmp_path):
    """Every merged A entry is a disjoint mean of kept, rescaled inputs sqrt(w s) A_i / density
    (or 0); the seed decides which entries are kept."""
    density = 0.5
    (factors_a, scale_a), (factors_b, scale_b) = lora_factors(adapters["a"]), \
        lora_factors(adapters["b"])
    roots = [(WEIGHTS[0] * scale_a) ** 0.5, (WEIGHTS[1] * scale_b) ** 0.5]
    outputs = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"dare-{len(outputs)}-{seed}"
        merge.merge([adapters["a"], adapters["b"]], WEIGHTS, "dare_ties", out, density=density,
                    seed=seed)
        outputs.setdefault(seed, []).append(lora_factors(out)[0])
    first, again = outputs[0]
    assert all(torch.equal(first[m][0], again[m][0]) for m in first)  # same seed, same merge
    assert any(not torch.equal(first[m][0], outputs[1][0][m][0]) for m in first)
    for module, (merged_a, _) in first.items():
        one, two = (root * factors[module][0] / density
                    for root, factors in zip(roots, (factors_a, factors_b)))
        candidates = torch.stack([torch.zeros_like(one), one, two, (one + two) / 2])
        distance = (candidates - merged_a).abs().min(dim=0).values
        assert distance.max() <= 1e-5, module
        dropped = float((merged_a == 0).float().mean())
        assert 0.1 < dropped < 0.4, module  # both inputs dropped: about density^2 = 0.25


def test_cat_of_different_ranks_is_allowed(adapters, tmp_path):
    summary = merge.merge([adapters["a"], adapters["wide"]], [0.5, 0.5], "cat", tmp_path / "m")
    assert summary["rank"] == 12


@pytest.mark.parametrize("argv, message", [
    (["--weights", "0.5", "--method", "linear"], "--weights: 1 weights for 2 adapters"),
    (["--weights", "0.5,x", "--method", "linear"], "--weights: expected numbers, got '0.5,x'"),
    (["--weights", "0.5,0.5", "--method", "svd", "--density", "0.3"],
     "--density applies to ties, dare_ties, not svd"),
    (["--weights", "0.5,0.5", "--method", "ties", "--density", "1.5"],
     "--density: must be in (0, 1], got 1.5"),
])
def test_bad_weights_and_options_are_one_line_errors(adapters, tmp_path, capsys, argv, message):
    out = tmp_path / "merged"
    code = cli.main(["merge", "--adapters", f"{adapters['a']},{adapters['b']}",
                     "--output", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"tunelab merge: error: {message}\n"
    assert not out.exists()


def test_linear_merge_of_different_ranks_names_both(adapters, tmp_path, capsys):
    code = cli.main(["merge", "--adapters", f"{adapters['a']},{adapters['wide']}",
                     "--method", "linear", "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"--method linear needs equal ranks ({adapters['a']}: r=4, {adapters['wide']}: r=8); " \
           "use cat or svd" in err


def test_unknown_method_is_refused(adapters, tmp_path):
    with pytest.raises(merge.MergeError, match="unknown method 'average'"):
        merge.merge([adapters["a"], adapters["b"]], [0.5, 0.5], "average", tmp_path / "m")


def test_adapters_of_different_bases_are_refused(adapters, tiny_base_dir, make_tiny_adapter,
                                                 tmp_path):
    other_base = tmp_path / "other_base"
    shutil.copytree(tiny_base_dir, other_base)
    config = json.loads((other_base / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5  # another model: its config differs
    (other_base / "config.json").write_text(json.dumps(config))
    foreign = make_tiny_adapter("foreign", base_dir=other_base)
    with pytest.raises(merge.MergeError, match="adapters of different bases cannot be merged"):
        merge.merge([adapters["a"], foreign], [0.5, 0.5], "linear", tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --- export -------------------------------------------------------------------

def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_export_reloads_with_plain_transformers_and_matches_the_adapter(
        adapters, tiny_base_dir, tmp_path, capsys, write_jsonl):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(3)]
    prompts_file = write_jsonl(tmp_path / "test.jsonl", rows)
    out = tmp_path / "exported"
    code = cli.main(["export", "--adapter", str(adapters["a"]), "--output", str(out),
                     "--check-prompts", "5", "--prompts-file", str(prompts_file)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "max |logit diff| exported vs adapter model: " in printed
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
            export.EXPORT_INFO} <= {p.name for p in out.iterdir()}
    assert not (out / "adapter_config.json").exists()

    plain = AutoModelForCausalLM.from_pretrained(out)  # no PEFT, no tunelab
    adapter = PeftModel.from_pretrained(loading.load_base(tiny_base_dir), str(adapters["a"]))
    base = loading.load_base(tiny_base_dir)
    ids = [1, 2, 3, 400, 500, 600, 7000]
    torch.testing.assert_close(logits(plain, ids), logits(adapter, ids), atol=1e-4, rtol=0)
    assert (logits(plain, ids) - logits(base, ids)).abs().max() > 0.1  # the merge mattered
    info = json.loads((out / export.EXPORT_INFO).read_text())
    assert info["prompts"] == 3 and info["max_abs_logit_diff"] <= 1e-4  # all 3 test examples


def test_export_refuses_a_merge_that_does_not_match(adapters, tmp_path, monkeypatch, capsys):
    real_merge = export.merge_into_base

    def corrupted(base_dir, adapter_dir):
        model = real_merge(base_dir, adapter_dir)
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight[0, 0] += 5.0
        return model

    monkeypatch.setattr(export, "merge_into_base", corrupted)
    out = tmp_path / "exported"
    code = cli.main(["export", "--adapter", str(adapters["a"]), "--output", str(out),
                     "--check-prompts", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "exported model differs from the adapter model: max |logit diff| " in err
    assert f"> tolerance 0.001 on 2 prompts; {out} not written" in err
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging folder


def test_export_rejects_a_negative_tolerance_and_a_full_model(adapters, tiny_base_dir, tmp_path):
    with pytest.raises(export.ExportError, match="--tolerance: must be >= 0, got -1"):
        export.export_adapter(adapters["a"], tmp_path / "out", tolerance=-1)
    with pytest.raises(export.ExportError, match="already a full model folder"):
        export.export_adapter(tiny_base_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_qlora_export_merges_into_the_dequantized_base_it_was_trained_on(
        make_tiny_adapter, tiny_base_dir, tmp_path):
    adapter = make_tiny_adapter("qlora", seed=4)
    loading.write_train_info(adapter, "qlora", "fp32", loading.QuantizationParams())  # 4-bit nf4
    summary = export.export_adapter(adapter, tmp_path / "out", prompt_count=1,
                                    prompts_file=tmp_path / "absent.jsonl")
    # max_abs_logit_diff: against the adapter on the same dequantized base, in fp32.
    assert summary["method"] == "qlora" and summary["max_abs_logit_diff"] <= 1e-4
    # Against the live 4-bit model: bnb computes in bf16 on an AVX512-BF16 CPU, else in fp32.
    quantized = summary["quantized"]
    assert quantized["arithmetic"] == ("bfloat16" if has_avx512bf16() else "float32")
    assert quantized["max_abs_logit_diff"] <= quantized["tolerance"]
    assert quantized["rounding_allowance"].startswith("3 roundings x 14 quantized layers x ")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert "quantization_config" not in json.loads((tmp_path / "out/config.json").read_text())
    # Merged into the original fp32 weights instead, it would be another model, and
    # the check against the 4-bit model allows well under that, even in bf16.
    unquantized = PeftModel.from_pretrained(loading.load_base(tiny_base_dir), str(adapter))
    ids = [1, 2, 3, 400, 500]
    assert (logits(plain, ids) - logits(unquantized, ids)).abs().max() > 2 * quantized["tolerance"]


def test_qlora_export_refuses_a_merge_into_the_unquantized_base(
        make_tiny_adapter, tiny_base_dir, tmp_path, monkeypatch):
    """Merged and compared on the same wrong base, only the live 4-bit model tells."""
    adapter = make_tiny_adapter("qlora", seed=4)
    loading.write_train_info(adapter, "qlora", "fp32", loading.QuantizationParams())
    real_base = export.base_as_trained
    monkeypatch.setattr(export, "base_as_trained", lambda base_dir, adapter_dir, dequantize:
                        loading.load_base(base_dir) if dequantize
                        else real_base(base_dir, adapter_dir, dequantize))
    arithmetic = "bfloat16" if has_avx512bf16() else "float32"
    with pytest.raises(export.ExportError, match=(
            r"^exported model differs from the quantized model it was evaluated as: max \|logit "
            r"diff\| [0-9.]+ > tolerance 0.001 \+ [0-9.e-]+ for bitsandbytes computing in "
            rf"{arithmetic} \(3 roundings x 14 quantized layers x {arithmetic} unit roundoff "
            r"[0-9.e-]+ x max \|logit\| [0-9.]+\) on 1 prompts; .*out not written$")):
        export.export_adapter(adapter, tmp_path / "out", prompt_count=1,
                              prompts_file=tmp_path / "absent.jsonl")
    assert list(tmp_path.iterdir()) == []
