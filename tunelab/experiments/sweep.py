"""Run a sweep's trials as DVC experiments, and the `tunelab sweep` / `lr-test` commands.

Every trial is `dvc exp run --queue -n NAME -S key=value ...` on top of HEAD; the
queue then runs with `parallel` workers (`dvc exp run --run-all -j N`), each trial in
its own temporary copy, so the user's workspace is never touched. A trial's result
is read back from its experiment commit, where DVC keeps the git-tracked metrics
files. Each sweep is recorded in reports/sweeps/ID.json (experiments.sweep_record) for
`tunelab sweep-report`. All talk with Git and DVC goes through experiments.repo.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tunelab.experiments import repo, sweep_report, sweep_space
from tunelab.experiments.sweep_record import (RECORDS_DIR, finish, new_record, new_sweep_id,
                                              next_trial_name, save_record)
from tunelab.config.sweep_file import read_yaml, SweepSpec

POLL_SECONDS = 3
LR_TEST_FILE = "sweeps/lr_test.yaml"


class DvcTrials:
    """Queues and runs batches of trials; prints one progress line per finished trial."""

    def __init__(self, spec: SweepSpec, record: dict, progress):
        self.spec, self.record, self.progress = spec, record, progress
        self.log = RECORDS_DIR / f"{record['id']}.log"
        self.started = time.monotonic()

    def run_batch(self, batch: list[dict]) -> list[float | None]:
        trials = []
        for values in batch:
            name = next_trial_name(self.record)
            trial = {"name": name, "params": values, "value": None, "status": "queued"}
            settings = {**self.spec.fixed, **values}
            repo.queue_experiment(name, {key: sweep_space.cli_value(value)
                                         for key, value in settings.items()})
            self.record["trials"].append(trial)
            trials.append(trial)
        save_record(self.record)
        with open(self.log, "a", encoding="utf-8") as log:
            runner = repo.run_queue(self.spec.parallel, log)
            try:
                self._follow(runner, trials)
            except KeyboardInterrupt:
                save_record(self.record)
                raise
        save_record(self.record)
        return [trial["value"] for trial in trials]

    def _follow(self, runner: subprocess.Popen, trials: list[dict]) -> None:
        pending = list(trials)
        while pending:
            exited = runner.poll() is not None
            refs = repo.experiment_refs(self.record["baseline"])
            for trial in [t for t in pending if t["name"] in refs]:
                finish(trial, refs[trial["name"]], self.spec.metric)
                pending.remove(trial)
                self._report(trial)
            if exited:
                break
            time.sleep(POLL_SECONDS)
        runner.wait()
        for trial in pending:
            trial["status"] = "failed"
            self._report(trial)

    def _report(self, trial: dict) -> None:
        best = sweep_report.best_trial(self.record)
        count = sum(t["status"] != "queued" for t in self.record["trials"])
        if trial["value"] is not None:
            outcome = f"{self.spec.metric}={trial['value']:.4f}"
        else:
            outcome = (f"FAILED (dvc queue logs {trial['name']}; {self.log})"
                       if trial["status"] == "failed" else f"no {self.spec.metric} in its metrics")
        best_text = f"  best {best['value']:.4f} ({best['name']})" if best else ""
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        self.progress.update(1)
        self.progress.write(f"[{count}/{self.spec.total_trials}] {trial['name']} "
                            f"{sweep_space.describe(trial['params'])} -> {outcome}{best_text}  "
                            f"{minutes}m{seconds:02d}s")


def run(spec: SweepSpec) -> dict:
    """Run every trial of ``spec``; return the sweep record."""
    from tqdm import tqdm

    baseline = repo.preflight()
    record = new_record(spec, new_sweep_id(spec.name), baseline)
    save_record(record)
    print(f"sweep {record['id']}: {spec.strategy}, {spec.total_trials} trials on "
          f"{baseline[:7]}, {spec.parallel} at a time; {spec.direction} {spec.metric}")
    with tqdm(total=spec.total_trials, unit="trial", disable=None) as progress:
        trials = DvcTrials(spec, record, progress)
        if spec.strategy == "bayesian":
            sweep_space.optimize(spec, trials.run_batch)
        else:
            trials.run_batch(sweep_space.expand(spec))
    changed = repo.dirty_files()
    if changed:  # DVC restores the workspace after queueing; say so loudly if it did not
        print(f"warning: the workspace changed during the sweep: {', '.join(changed)}",
              file=sys.stderr)
    return record


def sweep(file: str | Path, sets: dict | None = None, max_trials: int | None = None,
          parallel: int | None = None, dry_run: bool = False, launcher: str = "local") -> int:
    """`tunelab sweep FILE`: ``sets`` go on top of the file's ``set:``; the others override
    its keys when not None. 0 when some trial produced the metric (``launcher``
    "skypilot": experiments.cloud_launch, 0 when every job launched)."""
    raw = read_yaml(str(file))
    overrides = {key: value for key, value in (("max_trials", max_trials),
                                               ("parallel", parallel)) if value is not None}
    if sets:
        overrides["set"] = {**(raw.get("set") or {}), **sets}
    spec = sweep_space.load_sweep(file, overrides)
    if launcher == "skypilot":
        from tunelab.experiments import cloud_launch

        return cloud_launch.launch(spec, dry_run)
    return _run_and_report(spec, dry_run)


def lr_test(file: str | Path = LR_TEST_FILE, rates: list[float] | None = None,
            steps: int | None = None, dry_run: bool = False) -> int:
    """`tunelab lr-test`: the preset sweep over ``rates``, ``steps`` optimizer steps each."""
    raw = read_yaml(file)
    overrides = {}
    if rates:
        overrides["search_space"] = {"train.learning_rate": rates}
    if steps:
        overrides["set"] = {**(raw.get("set") or {}), "train.max_steps": steps}
    return _run_and_report(sweep_space.load_sweep(file, overrides), dry_run)


def _run_and_report(spec: SweepSpec, dry_run: bool) -> int:
    if dry_run:
        fixed = " ".join(f"{k}={sweep_space.cli_value(v)}" for k, v in spec.fixed.items())
        print(f"{spec.path}: {spec.strategy}, {spec.total_trials} trials, {spec.direction} "
              f"{spec.metric}" + (f"; every trial: {fixed}" if fixed else ""))
        if spec.strategy == "bayesian":
            for dim in spec.space:
                print(f"  {dim.key}: {dim.text()}")
        else:
            for number, trial in enumerate(sweep_space.expand(spec), start=1):
                print(f"  {number:02d} {sweep_space.describe(trial)}")
        return 0
    try:
        record = run(spec)
    except KeyboardInterrupt:
        print("\ninterrupted: queued trials keep running in the background (dvc queue status; "
              "stop them with dvc queue kill); report them later with "
              "`tunelab sweep-report`", file=sys.stderr)
        return 130
    sweep_report.print_and_write(record)
    return 0 if any(t["value"] is not None for t in record["trials"]) else 1
