"""Run a sweep's trials as DVC experiments, and the `tunelab sweep` / `lr-test` commands.

Every trial is `dvc exp run --queue -n NAME -S key=value ...` on top of HEAD; the
queue then runs with `parallel` workers (`dvc exp run --run-all -j N`), each trial in
its own temporary copy, so the user's workspace is never touched. A trial's result
is read back from its experiment commit (refs/exps/...), where DVC keeps the
git-tracked metrics files. Each sweep is recorded in reports/sweeps/ID.json for
`tunelab sweep-report`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tunelab import gate, io, sweep
from tunelab.sweep import SweepError, SweepSpec

RECORDS_DIR = Path("reports/sweeps")
POLL_SECONDS = 3
LR_TEST_FILE = "sweeps/lr_test.yaml"


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SweepError(f"git {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def dvc(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True,
                            env=gate.tool_env())
    if result.returncode != 0:
        lines = (result.stderr + result.stdout).strip().splitlines() or [str(result.returncode)]
        raise SweepError(f"dvc {' '.join(args[:3])}: {lines[-1].removeprefix('ERROR: ')}")
    return result


def tracked_changes() -> list[str]:
    lines = git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    return [line[3:] for line in lines if line.strip()]


def preflight() -> str:
    """Refuse to start where trials could not be exact DVC experiments; return HEAD."""
    if git("rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        raise SweepError("not a git repository with a commit: DVC experiments are git commits")
    if git("var", "GIT_COMMITTER_IDENT", check=False).returncode != 0:
        raise SweepError("git user.name / user.email are not set (DVC experiments are commits): "
                         "git config user.name NAME; git config user.email EMAIL")
    changed = tracked_changes()
    if changed:
        shown = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
        raise SweepError(f"uncommitted changes to tracked files ({shown}): commit or stash them "
                         "first; every trial is HEAD plus its params, and a sweep leaves your "
                         "workspace as it is")
    busy = [line.split() for line in dvc("queue", "status").stdout.splitlines()
            if line.split() and line.split()[-1] in ("Queued", "Running")]
    if busy:
        raise SweepError(f"the DVC experiment queue already holds {len(busy)} queued or running "
                         "experiments; let them finish or remove them (dvc queue status, "
                         "dvc queue remove --queued) so the sweep runs only its own trials")
    return git("rev-parse", "HEAD").stdout.strip()


def experiments() -> list[tuple[str, str, str]]:
    """(baseline commit, experiment name, experiment commit) of every finished experiment."""
    out = git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/").stdout
    found = []
    for line in out.splitlines():
        sha, ref = line.split(" ", 1)
        parts = ref.split("/")
        if len(parts) == 5 and len(parts[2]) == 2:  # refs/exps/ab/cdef.../NAME
            found.append((parts[2] + parts[3], parts[4], sha))
    return found


def experiment_refs(baseline: str | None = None) -> dict[str, str]:
    """{experiment name: commit} of finished experiments (on ``baseline``, or on any commit)."""
    return {name: sha for base, name, sha in experiments() if baseline in (None, base)}


def show_file(commit: str, path: str) -> str | None:
    result = git("show", f"{commit}:{path}", check=False)
    return result.stdout if result.returncode == 0 else None


def new_sweep_id(name: str) -> str:
    taken = set(experiment_refs())
    for number in range(1, 10_000):
        sweep_id = f"{name}-{number}"
        if not (RECORDS_DIR / f"{sweep_id}.json").exists() and not any(
                exp.startswith(sweep_id + "-") for exp in taken):
            return sweep_id
    raise SweepError(f"no free sweep id for {name}")


def new_record(spec: SweepSpec, sweep_id: str, baseline: str) -> dict:
    return {"id": sweep_id, "file": spec.path, "strategy": spec.strategy, "metric": spec.metric,
            "direction": spec.direction, "keys": spec.keys, "fixed": spec.fixed,
            "log_keys": [dim.key for dim in spec.space if dim.log], "baseline": baseline,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "trials": []}


def save_record(record: dict) -> Path:
    path = RECORDS_DIR / f"{record['id']}.json"
    io.write_json_atomic(path, record)
    return path


def load_record(sweep_id: str | None = None) -> dict:
    """A sweep's record, the latest when no id is given, its trials refreshed from the
    experiments that have finished since (an interrupted sweep keeps running in the queue)."""
    if sweep_id:
        path = RECORDS_DIR / f"{sweep_id}.json"
        if not path.is_file():
            known = sorted(p.stem for p in RECORDS_DIR.glob("*.json"))
            raise SweepError(f"{path}: no such sweep (known: {', '.join(known) or 'none'})")
    else:
        found = sorted(RECORDS_DIR.glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SweepError(f"{RECORDS_DIR}: no sweeps yet; run `tunelab sweep FILE` first")
        path = found[-1]
    record = io.read_json(path)
    refs = experiment_refs(record["baseline"])
    for trial in record["trials"]:
        if trial["status"] != "done" and trial["name"] in refs:
            finish(trial, refs[trial["name"]], record["metric"])
    return record


def finish(trial: dict, commit: str, metric: str) -> None:
    trial["commit"] = commit
    trial["value"] = gate.metric_value(metric, lambda path: show_file(commit, path))
    trial["status"] = "done" if trial["value"] is not None else "no metric"


class DvcTrials:
    """Queues and runs batches of trials; prints one progress line per finished trial."""

    def __init__(self, spec: SweepSpec, record: dict, progress):
        self.spec, self.record, self.progress = spec, record, progress
        self.log = RECORDS_DIR / f"{record['id']}.log"
        self.started = time.monotonic()

    def run_batch(self, batch: list[dict]) -> list[float | None]:
        trials = []
        for values in batch:
            name = f"{self.record['id']}-{len(self.record['trials']) + 1:02d}"
            trial = {"name": name, "params": values, "value": None, "status": "queued"}
            settings = {**self.spec.fixed, **values}
            dvc("exp", "run", "--queue", "-n", name,
                *[arg for key, value in settings.items()
                  for arg in ("-S", f"{key}={sweep.cli_value(value)}")])
            self.record["trials"].append(trial)
            trials.append(trial)
        save_record(self.record)
        with open(self.log, "a", encoding="utf-8") as log:
            runner = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "--run-all",
                                       "-j", str(self.spec.parallel)],
                                      stdout=log, stderr=subprocess.STDOUT, env=gate.tool_env())
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
            refs = experiment_refs(self.record["baseline"])
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
        done = [t for t in self.record["trials"] if t["value"] is not None]
        pick = min if self.spec.direction == "minimize" else max
        best = pick(done, key=lambda t: t["value"]) if done else None
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
                            f"{sweep.describe(trial['params'])} -> {outcome}{best_text}  "
                            f"{minutes}m{seconds:02d}s")


def run(spec: SweepSpec) -> dict:
    """Run every trial of ``spec``; return the sweep record."""
    from tqdm import tqdm

    baseline = preflight()
    record = new_record(spec, new_sweep_id(spec.name), baseline)
    save_record(record)
    print(f"sweep {record['id']}: {spec.strategy}, {spec.total_trials} trials on "
          f"{baseline[:7]}, {spec.parallel} at a time; {spec.direction} {spec.metric}")
    with tqdm(total=spec.total_trials, unit="trial", disable=None) as progress:
        trials = DvcTrials(spec, record, progress)
        if spec.strategy == "bayesian":
            sweep.optimize(spec, trials.run_batch)
        else:
            trials.run_batch(sweep.expand(spec))
    changed = tracked_changes()
    if changed:  # DVC restores the workspace after queueing; say so loudly if it did not
        print(f"warning: the workspace changed during the sweep: {', '.join(changed)}",
              file=sys.stderr)
    return record


def sweep_command(args) -> int:
    raw = sweep.read_yaml(str(args.file))
    overrides = {key: value for key, value in (("max_trials", args.max_trials),
                                               ("parallel", args.parallel)) if value is not None}
    if args.set:
        overrides["set"] = {**(raw.get("set") or {}), **_parse_sets(args.set, args.file)}
    return _run_and_report(sweep.load_sweep(args.file, overrides), args.dry_run)


def lr_test_command(args) -> int:
    raw = sweep.read_yaml(args.file)
    overrides = {}
    if args.rates:
        overrides["search_space"] = {"train.learning_rate": args.rates}
    if args.steps:
        overrides["set"] = {**(raw.get("set") or {}), "train.max_steps": args.steps}
    return _run_and_report(sweep.load_sweep(args.file, overrides), args.dry_run)


def _run_and_report(spec: SweepSpec, dry_run: bool) -> int:
    from tunelab import sweep_report

    if dry_run:
        fixed = " ".join(f"{k}={sweep.cli_value(v)}" for k, v in spec.fixed.items())
        print(f"{spec.path}: {spec.strategy}, {spec.total_trials} trials, {spec.direction} "
              f"{spec.metric}" + (f"; every trial: {fixed}" if fixed else ""))
        if spec.strategy == "bayesian":
            for dim in spec.space:
                print(f"  {dim.key}: {dim.text()}")
        else:
            for number, trial in enumerate(sweep.expand(spec), start=1):
                print(f"  {number:02d} {sweep.describe(trial)}")
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


def _parse_sets(items: list[str], path) -> dict:
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SweepError(f"--set {item}: expected KEY=VALUE, e.g. train.max_steps=2")
        values[key] = yaml.safe_load(text)
    return values


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"tunelab lr-test: error: --rates: not a comma-separated list of "
                         f"numbers: {text!r}") from None
    return rates


def register(commands) -> None:
    run_cmd = commands.add_parser("sweep", help="hyperparameter sweep from a sweep file: every "
                                  "trial a DVC experiment; writes reports/sweep.html")
    run_cmd.add_argument("file", type=Path, help="sweep file, e.g. sweeps/lr_rank.yaml")
    run_cmd.add_argument("--set", action="append", metavar="KEY=VALUE",
                         help="params every trial gets, on top of the file's `set:` (repeatable)")
    run_cmd.add_argument("--max-trials", type=int, help="override max_trials")
    run_cmd.add_argument("--parallel", type=int, help="override parallel")
    run_cmd.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    run_cmd.set_defaults(handler=sweep_command)

    lr = commands.add_parser("lr-test", help="quick learning-rate test: a few short runs over "
                             f"a list of rates ({LR_TEST_FILE})")
    lr.add_argument("--rates", type=_rates, help="comma-separated, e.g. 1e-4,3e-4,1e-3,3e-3")
    lr.add_argument("--steps", type=int, help="optimizer steps per run (train.max_steps)")
    lr.add_argument("--file", default=LR_TEST_FILE, help="the preset sweep file")
    lr.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    lr.set_defaults(handler=lr_test_command)

