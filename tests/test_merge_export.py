"""`tunelab merge` and `tunelab export` on tiny random adapters (seconds)."""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tunelab import cli, export, inference, merging, models


@pytest.fixture(scope="module")
def adapters(make_tiny_adapter):
    return {"a": make_tiny_adapter("a", r=4, seed=1), "b": make_tiny_adapter("b", r=4, seed=2),
            "wide": make_tiny_adapter("wide", r=8, seed=3)}


def delta(base_dir, adapter_dir, module="model.layers.0.self_attn.q_proj"):
    """The weight change an adapter makes to one module."""
    peft_model = PeftModel.from_pretrained(models.load_base(base_dir), str(adapter_dir))
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
    info = json.loads((out / merging.MERGE_INFO).read_text())
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


def test_cat_of_different_ranks_is_allowed(adapters, tmp_path):
    summary = merging.merge([adapters["a"], adapters["wide"]], [0.5, 0.5], "cat", tmp_path / "m")
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
    with pytest.raises(merging.MergeError, match="unknown method 'average'"):
        merging.merge([adapters["a"], adapters["b"]], [0.5, 0.5], "average", tmp_path / "m")


def test_adapters_of_different_bases_are_refused(adapters, tiny_base_dir, make_tiny_adapter,
                                                 tmp_path):
    other_base = tmp_path / "other_base"
    shutil.copytree(tiny_base_dir, other_base)
    config = json.loads((other_base / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5  # another model: its config differs
    (other_base / "config.json").write_text(json.dumps(config))
    foreign = make_tiny_adapter("foreign", base_dir=other_base)
    with pytest.raises(merging.MergeError, match="adapters of different bases cannot be merged"):
        merging.merge([adapters["a"], foreign], [0.5, 0.5], "linear", tmp_path / "m")
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
    adapter = PeftModel.from_pretrained(models.load_base(tiny_base_dir), str(adapters["a"]))
    base = models.load_base(tiny_base_dir)
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
    models.write_train_info(adapter, "qlora", "fp32", models.QuantizationParams())  # 4-bit nf4
    summary = export.export_adapter(adapter, tmp_path / "out", prompt_count=1,
                                    prompts_file=tmp_path / "absent.jsonl")
    assert summary["method"] == "qlora" and summary["max_abs_logit_diff"] <= 1e-4
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert "quantization_config" not in json.loads((tmp_path / "out/config.json").read_text())
    # Merged into the original fp32 weights instead, it would be another model.
    unquantized = PeftModel.from_pretrained(models.load_base(tiny_base_dir), str(adapter))
    ids = [1, 2, 3, 400, 500]
    assert (logits(plain, ids) - logits(unquantized, ids)).abs().max() > 0.1
