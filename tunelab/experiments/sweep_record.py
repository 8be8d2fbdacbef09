"""A sweep's record, reports/sweeps/ID.json: its spec, baseline commit and trials.

`tunelab sweep` (experiments.sweep) writes it as trials are queued and finish;
`tunelab sweep-report` (experiments.sweep_report) reads it back. A trial's result is
read from its DVC experiment commit, where DVC keeps the git-tracked metrics files, so
a record refreshed later also picks up trials that finished after an interruption.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from tunelab.config.sweep_file import SweepError, SweepSpec
from tunelab.experiments import check, repo
from tunelab.util import files

RECORDS_DIR = Path("reports/sweeps")


def new_sweep_id(name: str) -> str:
    """``NAME-N`` for the lowest N used by no record and no experiment."""
    taken = set(repo.experiment_refs())
    for number in range(1, 10_000):
        sweep_id = f"{name}-{number}"
        if not (RECORDS_DIR / f"{sweep_id}.json").exists() and not any(
                exp.startswith(sweep_id + "-") for exp in taken):
            return sweep_id
    raise SweepError(f"no free sweep id for {name}")


def trial_name(sweep_id: str, number: int) -> str:
    """Trial ``number`` (from 1) of sweep ``sweep_id``: its DVC experiment's name."""
    return f"{sweep_id}-{number:02d}"


def next_trial_name(record: dict) -> str:
    """The name of the next trial ``record`` takes."""
    return trial_name(record["id"], len(record["trials"]) + 1)


def new_record(spec: SweepSpec, sweep_id: str, baseline: str) -> dict:
    return {"id": sweep_id, "file": spec.path, "strategy": spec.strategy, "metric": spec.metric,
            "direction": spec.direction, "keys": spec.keys, "fixed": spec.fixed,
            "log_keys": [dim.key for dim in spec.space if dim.log], "baseline": baseline,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "trials": []}


def save_record(record: dict) -> Path:
    path = RECORDS_DIR / f"{record['id']}.json"
    files.write_json_atomic(path, record)
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
    record = files.read_json(path)
    refs = repo.experiment_refs(record["baseline"])
    for trial in record["trials"]:
        if trial["status"] != "done" and trial["name"] in refs:
            finish(trial, refs[trial["name"]], record["metric"])
    return record


def finish(trial: dict, commit: str, metric: str) -> None:
    """Record a finished trial: its experiment commit and the metric read from it."""
    trial["commit"] = commit
    trial["value"] = check.metric_value(metric, lambda path: repo.show_file(commit, path))
    trial["status"] = "done" if trial["value"] is not None else "no metric"


def trial_sweeps(root: str | Path = ".") -> dict[str, str]:
    """{experiment name: sweep id} of every trial the records in reports/sweeps/ list (a
    record that cannot be read names none)."""
    found = {}
    for path in sorted((Path(root) / RECORDS_DIR).glob("*.json")):
        try:
            record = files.read_json(path)
        except (OSError, ValueError):
            continue
        for trial in record.get("trials", []) if isinstance(record, dict) else []:
            if isinstance(trial, dict) and isinstance(trial.get("name"), str):
                found[trial["name"]] = record.get("id", path.stem)
    return found
