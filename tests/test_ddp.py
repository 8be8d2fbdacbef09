"""Multi-process training: the unchanged train stage under `accelerate launch` on CPU
(DDP over gloo), and the shipped accelerate configs for GPUs.

What is compared: the per-step training loss and gradient norm that rank 0 logs (DVCLive's
loss.tsv / grad_norm.tsv) for 2 processes x batch 2 against 1 process x batch 4, same seed.
accelerate's default dataloader sharding hands out the sampler's batches round-robin, so at
each step ranks 0 and 1 see the two halves of the single process's batch of 4; the trainer
normalises the loss by the answer tokens counted over both ranks, so the gradients and the
logged losses are the same sums over the same 4 examples. LoRA dropout is 0: dropout masks
come from each process's own random stream.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.config.params import LoraParams, TrainParams
from tunelab.train import training
from tunelab.util import files
from conftest import free_port, stage_args

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
STEPS = 4
PER_PROCESS_BATCH = 2
COLORS = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue",
          "snow": "white", "coal": "black", "orange": "orange", "plum": "purple"}
TRAIN = {"learning_rate": 0.03, "max_steps": STEPS, "warmup_ratio": 0.0, "logging_steps": 1,
         "eval_steps": 0, "save_steps": 0, "precision": "fp32",
         "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}


def examples() -> list[dict]:
    """24 chat examples whose answers differ in length (1-4 words), so a per-rank mean
    would differ from the mean over all answer tokens."""
    rows = []
    for i in range(3):
        for j, (thing, color) in enumerate(COLORS.items()):
            rows.append({"messages": [
                {"role": "user", "content": f"Color of {thing}?" + " please" * ((i + j) % 3)},
                {"role": "assistant", "content": " ".join([color] * (1 + (i * 3 + j) % 4))}]})
    return rows


def read_tsv(path: Path) -> list[tuple[int, float]]:
    return [(int(line.split("\t")[0]), float(line.split("\t")[1]))
            for line in path.read_text().splitlines()[1:]]


def make_workspace(work: Path, base_dir: Path) -> Path:
    """``work`` laid out as the train stage reads it (models/base, data/prepared, params.yaml),
    with batch PER_PROCESS_BATCH per process. tests/test_multinode.py makes one per node."""
    (work / "models").mkdir(parents=True)
    (work / "models" / "base").symlink_to(base_dir)
    files.write_jsonl_atomic(work / "data/prepared/train.jsonl", examples())
    files.write_jsonl_atomic(work / "data/prepared/val.jsonl", examples()[:4])
    params = {"train": {**TRAIN, "batch_size": PER_PROCESS_BATCH}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


def launch_env() -> dict:
    """The environment for `accelerate launch` from a test: this venv's tools first."""
    env = dict(os.environ, OMP_NUM_THREADS="1",  # one core per process: no oversubscription
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("RANK", None)
    return env


def train_single_process(base_dir: Path, prepared_dir: Path, out: Path) -> dict:
    """The same training in this process: 1 process, batch 2 x PER_PROCESS_BATCH; curves
    under ``out``/live/plots/metrics."""
    p = TrainParams(**{**TRAIN, "lora": LoraParams(**TRAIN["lora"]),
                       "batch_size": 2 * PER_PROCESS_BATCH})
    return training.train(p, base_dir, prepared_dir / "train.jsonl", prepared_dir / "val.jsonl",
                          out / "adapter", out / "live", out / "checkpoints")


def assert_same_curves(multi_curves: Path, single_curves: Path) -> None:
    """loss.tsv and grad_norm.tsv: the same steps, values equal within relative 1e-4."""
    for name in ("loss.tsv", "grad_norm.tsv"):
        multi = read_tsv(multi_curves / name)
        single = read_tsv(single_curves / name)
        assert [step for step, _ in multi] == [step for step, _ in single] == [1, 2, 3, 4]
        for (step, a), (_, b) in zip(multi, single):
            assert a == pytest.approx(b, rel=1e-4), f"{name} step {step}: {a} vs {b}"


@pytest.fixture(scope="module")
def ddp_run(tiny_base_dir, tmp_path_factory):
    """The train stage, as dvc.yaml runs it but under `accelerate launch`, 2 processes."""
    work = make_workspace(tmp_path_factory.mktemp("ddp"), tiny_base_dir)
    result = subprocess.run(
        ["accelerate", "launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"),
         "--num_processes", "2", "--main_process_port", str(free_port()),
         str(REPO / "stages" / "train.py"), *stage_args("train", work)],
        cwd=work, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return work, result


@pytest.fixture(scope="module")
def single_run(tiny_base_dir, ddp_run, tmp_path_factory):
    """The same training in this process: 1 process, batch 2 x 2."""
    work, _ = ddp_run
    out = tmp_path_factory.mktemp("single")
    return out, train_single_process(tiny_base_dir, work / "data/prepared", out)


def test_two_processes_ran_as_one_group(ddp_run, single_run):
    work, _ = ddp_run
    assert json.loads((work / "metrics/train/summary.json").read_text())["processes"] == 2
    assert single_run[1]["processes"] == 1


def test_two_processes_give_the_loss_curve_of_one_with_double_batch(ddp_run, single_run):
    work, _ = ddp_run
    out, _ = single_run
    curves = work / "metrics/train/plots/metrics"
    assert_same_curves(curves, out / "live/plots/metrics")
    assert read_tsv(curves / "loss.tsv")[-1][1] < read_tsv(curves / "loss.tsv")[0][1]


def test_only_rank_zero_writes_the_outputs(ddp_run):
    work, _ = ddp_run
    summary = json.loads((work / "metrics/train/summary.json").read_text())
    assert summary["steps"] == STEPS and summary["train_examples"] == 24
    assert (work / "models/adapter/adapter_model.safetensors").is_file()
    assert (work / "models/adapter/README.md").is_file()
    # One line per step: rank 1 appended nothing to training.log.
    steps = [line.split()[1] for line in
             (work / "metrics/train/training.log").read_text().splitlines()
             if "loss=" in line and "train_loss" not in line and "eval_loss" not in line]
    assert steps == [f"{s}/{STEPS}" for s in range(1, STEPS + 1)]
    # No staging folder of another rank (files.atomic_path's hidden .adapter.*) was left behind.
    assert not [p.name for p in (work / "models").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_valid_for_this_accelerate(config):
    """Each shipped config loads with accelerate's own loader (unknown top-level keys fail),
    every nested key is a launch option, and the launcher builds its environment from it."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    loaded = ClusterConfig.from_yaml_file(str(config))
    options = {action.dest for action in launch_command_parser()._actions}
    for section in ("fsdp_config", "deepspeed_config"):
        for key in getattr(loaded, section) or {}:
            assert key in options, f"{config.name}: {section}.{key} is not an accelerate option"
    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
        assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"
        return
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_MIXED_PRECISION"] == defaults.mixed_precision
    if args.use_fsdp:
        assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"  # save_model writes a plain folder
        if "qlora" in config.name:
            assert env["FSDP_USE_ORIG_PARAMS"] == "false" and env["FSDP_VERSION"] == "1"


def test_fsdp2_config_builds_the_fsdp_plugin(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    config = REPO / "configs/accelerate/fsdp.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, _, _ = _validate_launch_command(args)
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith("FSDP_") or key == "ACCELERATE_USE_FSDP":
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.cpu_ram_efficient_loading is True


def test_qlora_under_fsdp_stores_4bit_weights_in_the_compute_dtype(monkeypatch):
    import torch

    from tunelab.config.params import QuantizationParams
    from tunelab.models import loading

    assert loading.bnb_config(QuantizationParams(), "bf16").bnb_4bit_quant_storage == torch.uint8
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert loading.bnb_config(QuantizationParams(), "bf16").bnb_4bit_quant_storage == torch.bfloat16
