"""Multi-node training: two "machines" on one box over loopback, and the Slurm launch script.

The loopback run starts two `accelerate launch` processes, --machine_rank 0 and 1 of
--num_machines 2, one training process each, joined by gloo at 127.0.0.1. Each "node" runs in
its own folder (its own models/base link, data/prepared and params.yaml), as two machines
with their own disks would. Its per-step loss and gradient norm must equal one process with
the double batch, as tests/test_ddp.py checks for two processes on one node (same data, same
round-robin sharding of the sampler's batches, same loss normalisation across ranks).

launch/slurm/train.sbatch cannot run here (no Slurm): it runs with stand-in srun, scontrol,
accelerate and dvc, and accelerate's own launcher turns each node's recorded command into
torchrun's settings.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, stage_args
from test_ddp import (REPO, STEPS, assert_same_curves, launch_env, make_workspace,
                      read_tsv, train_single_process)

LOOPBACK_CONFIG = REPO / "configs/accelerate/cpu_2node_loopback.yaml"
SBATCH = REPO / "launch/slurm/train.sbatch"
NODES = 2
TIMEOUT_S = 600
# What a rank > 0 node's folder holds after the run: its inputs and nothing else. RANK is the
# global rank under torchrun, so run_support.is_main_process() is False on every process of
# node 1: no adapter, metrics, env.json, nor models/checkpoints (save_steps 0; the scratch
# outputs of a rank > 0 go to a temporary folder, stages/train.py). With separate disks only
# global rank 0's outputs exist, on the main node, where DVC records them.
NODE1_FILES = ["data", "data/prepared", "data/prepared/train.jsonl", "data/prepared/val.jsonl",
               "models", "models/base", "params.yaml"]


def launch_node(rank: int, work: Path, port: int, log: Path) -> subprocess.Popen:
    """One "machine": `accelerate launch` for node ``rank`` in its own folder. Its own
    session, so a kill reaches torchrun and the training process under it."""
    command = ["accelerate", "launch", "--config_file", str(LOOPBACK_CONFIG),
               "--num_machines", str(NODES), "--machine_rank", str(rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--num_processes", str(NODES),  # in total: one per node
               str(REPO / "stages/train.py"), *stage_args("train", work)]
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=work, env=launch_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_all(processes: list[subprocess.Popen], timeout_s: float) -> list[int | None]:
    """Exit codes once all exit, or as soon as one fails or time runs out (None: still
    running). The others are then killed: a node whose peer died waits at the rendezvous or
    in a collective, and the test must not hang on it."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in processes]
            if all(code is not None for code in codes) or any(code for code in codes):
                return codes
            time.sleep(0.5)
        return [p.poll() for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def files_under(folder: Path) -> list[str]:
    """Every path under ``folder``, relative; links are listed, not followed."""
    found = []
    for parent, dirs, names in os.walk(folder):
        found += [str(Path(parent, name).relative_to(folder)) for name in dirs + names]
    return sorted(found)


@pytest.fixture(scope="module")
def two_nodes(tiny_base_dir, tmp_path_factory):
    """The two "nodes'" folders after the run. Logs sit beside the folders, so a folder
    holds only what training wrote there."""
    root = tmp_path_factory.mktemp("two_nodes")
    folders = [make_workspace(root / f"node{rank}", tiny_base_dir) for rank in range(NODES)]
    port = free_port()
    processes = [launch_node(rank, folders[rank], port, root / f"node{rank}.log")
                 for rank in range(NODES)]
    codes = wait_for_all(processes, TIMEOUT_S)
    logs = "\n".join(f"--- node {rank} ---\n" + (root / f"node{rank}.log").read_text()[-3000:]
                     for rank in range(NODES))
    assert codes == [0, 0], logs
    return folders


@pytest.fixture(scope="module")
def single_run(tiny_base_dir, two_nodes, tmp_path_factory):
    folders = two_nodes
    out = tmp_path_factory.mktemp("single")
    return out, train_single_process(tiny_base_dir, folders[0] / "data/prepared", out)


def test_two_nodes_give_the_loss_curve_of_one_process_with_double_batch(two_nodes, single_run):
    node0, _ = two_nodes
    out, summary = single_run
    assert summary["processes"] == 1
    assert_same_curves(node0 / "metrics/train/plots/metrics", out / "live/plots/metrics")


def test_global_rank_zero_writes_the_outputs(two_nodes):
    node0, _ = two_nodes
    summary = json.loads((node0 / "metrics/train/summary.json").read_text())
    assert summary["processes"] == NODES and summary["steps"] == STEPS
    assert summary["train_examples"] == 24
    assert (node0 / "models/adapter/adapter_model.safetensors").is_file()
    assert (node0 / "models/adapter/README.md").is_file()
    assert (node0 / "metrics/env.json").is_file()
    steps = [line.split()[1] for line in
             (node0 / "metrics/train/training.log").read_text().splitlines()
             if "loss=" in line and "train_loss" not in line and "eval_loss" not in line]
    assert steps == [f"{s}/{STEPS}" for s in range(1, STEPS + 1)]
    assert [step for step, _ in read_tsv(node0 / "metrics/train/plots/metrics/loss.tsv")] == \
        list(range(1, STEPS + 1))


def test_the_other_node_writes_nothing(two_nodes):
    _, node1 = two_nodes
    assert files_under(node1) == NODE1_FILES



def test_a_failed_node_stops_the_wait_and_the_other_is_killed():
    """A node that dies (exit 1) ends the wait at once; its peer, which would wait at the
    rendezvous, is killed with its whole session."""
    waiting = subprocess.Popen(["sleep", "60"], start_new_session=True)
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"],
                               start_new_session=True)
    started = time.monotonic()
    assert wait_for_all([waiting, failing], timeout_s=30) == [None, 1]
    assert time.monotonic() - started < 10
    assert waiting.returncode == -signal.SIGKILL


# --- launch/slurm/train.sbatch, with stand-ins for the cluster's commands --------------

SLURM_NODES = ["gpu-a", "gpu-b"]
GPUS_PER_NODE = 8
# srun with one task per node: runs its command once per node, as that node's task would
# see it (SLURM_NODEID), in turn. scontrol expands the node list; accelerate and dvc record
# their arguments as one JSON line each.
STAND_INS = {
    "srun": '#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\n'
            'for node in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$node "$@" || exit; done\n',
    "scontrol": '#!/bin/bash\n[[ "$*" == "show hostnames $SLURM_JOB_NODELIST" ]] || exit 1\n'
                + "".join(f"echo {node}\n" for node in SLURM_NODES),
    "accelerate": f'#!{sys.executable}\nimport json, os, sys\n'
                  'print(json.dumps(sys.argv[1:]), file=open(os.environ["CALLS"] + ".accelerate", "a"))\n',
    "dvc": f'#!{sys.executable}\nimport json, os, sys\n'
           'print(json.dumps(sys.argv[1:]), file=open(os.environ["CALLS"] + ".dvc", "a"))\n',
}


@pytest.fixture(scope="module")
def sbatch_calls(tmp_path_factory):
    """(accelerate's argv per node, dvc's argv per call) from running train.sbatch as the
    batch shell of a 2-node x 8-GPU job."""
    root = tmp_path_factory.mktemp("slurm")
    tools = root / "bin"
    tools.mkdir()
    for name, text in STAND_INS.items():
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    submit_dir = root / "repo"  # the script sources .venv/bin/activate from it
    (submit_dir / ".venv/bin").mkdir(parents=True)
    (submit_dir / ".venv/bin/activate").write_text("")
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ['PATH']}",
               CALLS=str(root / "calls"), SLURM_NNODES=str(len(SLURM_NODES)),
               SLURM_JOB_NODELIST="gpu-[a-b]", SLURM_GPUS_ON_NODE=str(GPUS_PER_NODE),
               SLURM_NODEID="0")  # the batch shell runs on the first node
    result = subprocess.run(["bash", str(SBATCH)], cwd=submit_dir, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    def calls(tool):
        return [json.loads(line) for line in (root / f"calls.{tool}").read_text().splitlines()]

    return calls("accelerate"), calls("dvc")


def test_sbatch_runs_the_train_stage_as_dvc_yaml_declares_it(sbatch_calls):
    launches, dvc_calls = sbatch_calls
    assert len(launches) == len(SLURM_NODES)
    for argv in launches:
        assert argv[0] == "launch"
        script = argv.index("stages/train.py")
        assert argv[script + 1:] == stage_args("train", REPO)
    assert dvc_calls == [["commit", "--force", "train"]]


def test_sbatch_gives_each_node_its_rank_and_the_first_node_as_main(sbatch_calls, monkeypatch):
    """accelerate's launcher (1.15) turns each node's command into torchrun's settings."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    monkeypatch.chdir(REPO)  # the script names the config relative to the repo root
    launches, _ = sbatch_calls
    for node_rank, argv in enumerate(launches):
        args = launch_command_parser().parse_args(argv[1:])
        args, _, _ = _validate_launch_command(args)
        assert args.config_file == "configs/accelerate/multi_node.yaml" and args.multi_gpu
        env = prepare_multi_gpu_env(args)
        assert (args.nnodes, args.node_rank, args.nproc_per_node) == \
            (str(len(SLURM_NODES)), node_rank, str(GPUS_PER_NODE))
        # accelerate 1.15 takes same_network only from its flag, not the config, so it hands
        # torchrun the main node as --rdzv_endpoint, which the static rendezvous connects to.
        assert (args.rdzv_backend, args.rdzv_endpoint) == ("static", f"{SLURM_NODES[0]}:29500")
        assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
