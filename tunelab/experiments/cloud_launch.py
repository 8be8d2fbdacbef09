"""Sweeps on cloud GPUs through SkyPilot: `tunelab sweep FILE --launcher skypilot`.

Every trial is one SkyPilot managed job of launch/skypilot/train.yaml with its own envs:
the job clones origin at the sweep's baseline commit, runs `dvc exp run --pull -n NAME
-S key=value ...` and pushes the experiment back (`dvc exp push origin NAME`: its Git ref
to origin, its outputs to the default DVC remote). The sweep record
(experiments.sweep_record) names the trials, so `tunelab sweep-report --pull` pulls the
experiments that are back and ranks them as it ranks local ones. Grid and random trials
launch all at once, detached; a bayesian sweep launches ``parallel`` at a time and waits
for them, since Optuna asks the next trials from their results.

tunelab runs SkyPilot's `sky` command and never imports it: SkyPilot pins click and uvicorn
versions that tunelab's own dependencies cannot share, so it lives in a virtualenv of its
own (`make skypilot-env`: .venv-sky).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tunelab.config.sweep_file import SweepError, SweepSpec
from tunelab.errors import MissingExtraError
from tunelab.experiments import repo, sweep_report, sweep_space
from tunelab.experiments.sweep_record import (RECORDS_DIR, finish, new_record, new_sweep_id,
                                              next_trial_name, save_record, trial_name)

TASK_FILE = "launch/skypilot/train.yaml"
SKY_VENV_BIN = Path(".venv-sky/bin")
REMOTE = "origin"
NO_ORIGIN = f"<no git remote {REMOTE}>"


def launch(spec: SweepSpec, dry_run: bool = False) -> int:
    """Launch (or, with ``dry_run``, print) one SkyPilot job per trial of ``spec``."""
    if dry_run:
        return print_plan(spec)
    sky = find_sky()
    baseline, repo_url = preflight()
    record = new_record(spec, new_sweep_id(spec.name), baseline)
    record["launcher"] = "skypilot"
    save_record(record)
    print(f"sweep {record['id']}: {spec.strategy}, {spec.total_trials} trials on "
          f"{baseline[:7]} of {repo_url}, one SkyPilot managed job each ({TASK_FILE}); "
          f"{spec.direction} {spec.metric}")
    jobs = CloudTrials(sky, spec, record, repo_url)
    if spec.strategy == "bayesian":
        sweep_space.optimize(spec, jobs.run_batch)
        sweep_report.print_and_write(record)
        return 0 if any(t["value"] is not None for t in record["trials"]) else 1
    jobs.launch(sweep_space.expand(spec), wait=False)
    launched = sum(t["status"] == "launched" for t in record["trials"])
    print(f"launched {launched} of {len(record['trials'])} jobs (`sky jobs queue` shows them; "
          f"output in {jobs.log}); once they are done: tunelab sweep-report --sweep "
          f"{record['id']} --pull")
    return 0 if launched == len(record["trials"]) else 1


class CloudTrials:
    """Launches trials as SkyPilot managed jobs and records them; ``run_batch`` waits for a
    batch to end and reads each result back (the ``optimize`` callback of a bayesian sweep)."""

    def __init__(self, sky: str, spec: SweepSpec, record: dict, repo_url: str):
        self.sky, self.spec, self.record, self.repo_url = sky, spec, record, repo_url
        self.log = RECORDS_DIR / f"{record['id']}.log"

    def launch(self, batch: list[dict], wait: bool) -> list[dict]:
        trials, commands = [], []
        for values in batch:
            name = next_trial_name(self.record)
            envs = trial_envs(self.repo_url, self.record["baseline"], name,
                              {**self.spec.fixed, **values})
            trial = {"name": name, "params": values, "value": None, "status": "launched"}
            self.record["trials"].append(trial)
            trials.append(trial)
            commands.append(launch_command(self.sky, envs, detach=not wait))
        save_record(self.record)
        # All at once: without --detach-run each `sky jobs launch` returns when its job ends.
        with open(self.log, "a", encoding="utf-8") as log:
            running = [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT) for command in commands]
            for trial, process in zip(trials, running):
                if process.wait() != 0 and not wait:
                    trial["status"] = "launch failed"
        save_record(self.record)
        for trial in trials if not wait else []:  # a waited-for trial's line is its result
            print(f"  {trial['name']} {sweep_space.describe(trial['params'])}: {trial['status']}")
        return trials

    def run_batch(self, batch: list[dict]) -> list[float | None]:
        trials = self.launch(batch, wait=True)
        repo.pull_experiments([trial["name"] for trial in trials], REMOTE)
        refs = repo.experiment_refs(self.record["baseline"])
        for trial in trials:
            if trial["name"] in refs:
                finish(trial, refs[trial["name"]], self.spec.metric)
            else:
                trial["status"] = "failed"  # never pushed back: `sky jobs logs NAME` says why
            outcome = "-" if trial["value"] is None else f"{trial['value']:.4f}"
            print(f"  {trial['name']} -> {self.spec.metric}={outcome} ({trial['status']})")
        save_record(self.record)
        return [trial["value"] for trial in trials]


def print_plan(spec: SweepSpec) -> int:
    """`--dry-run`: every trial's exact `sky jobs launch` command and task, with the
    problems a real launch would refuse for on stderr. Launches nothing, writes nothing."""
    baseline = repo.head()
    repo_url = repo.remote_url(REMOTE) or NO_ORIGIN
    for problem in launch_problems(baseline, repo_url):
        print(f"warning: {problem}", file=sys.stderr)
    sweep_id = new_sweep_id(spec.name)
    print(f"{spec.path}: {spec.strategy}, {spec.total_trials} trials, {spec.direction} "
          f"{spec.metric}; one SkyPilot managed job per trial ({TASK_FILE}) on {baseline[:7]} "
          f"of {repo_url}")
    if spec.strategy == "bayesian":
        trials = sweep_space.trials_known_in_advance(spec)
        print(f"bayesian: trials 01-{len(trials):02d} are TPE's seeded random start, the same "
              f"whatever the results; the others are asked from the results, {spec.parallel} "
              "at a time, and launched as each batch comes back")
    else:
        trials = sweep_space.expand(spec)
    for number in range(1, spec.total_trials + 1):
        name = trial_name(sweep_id, number)
        if number > len(trials):
            print(f"=== {name}: asked from Optuna's TPE once the trials before it are back")
            continue
        envs = trial_envs(repo_url, baseline, name, {**spec.fixed, **trials[number - 1]})
        command = launch_command("sky", envs, detach=spec.strategy != "bayesian")
        print(f"=== {name}: {sweep_space.describe(trials[number - 1])}")
        print(f"$ {shlex.join(command)}")
        print(filled_task(envs), end="")
    return 0


def trial_envs(repo_url: str, commit: str, name: str, settings: dict) -> dict[str, str]:
    """The task's envs for one trial: ``SETTINGS`` holds its params as space-separated
    ``key=value`` words, which the task's run turns into one -S each."""
    words = [f"{key}={sweep_space.cli_value(value)}" for key, value in settings.items()]
    for word in words:
        if any(char.isspace() for char in word):
            raise SweepError(f"{word!r}: a value with whitespace cannot be one word of the "
                             f"task's SETTINGS ({TASK_FILE}); the cloud launcher takes none")
    return {"REPO_URL": repo_url, "COMMIT": commit, "NAME": name, "SETTINGS": " ".join(words)}


def launch_command(sky: str, envs: dict[str, str], detach: bool) -> list[str]:
    """`sky jobs launch` of the task file with these envs, as an argument list (no shell)."""
    return [sky, "jobs", "launch", "--yes", *(["--detach-run"] if detach else []),
            "--name", envs["NAME"],
            *[arg for key, value in envs.items() for arg in ("--env", f"{key}={value}")],
            TASK_FILE]


def filled_task(envs: dict[str, str], task_file: str | Path = TASK_FILE) -> str:
    """The task file as SkyPilot reads it with these envs (``--env`` replaces the file's)."""
    task = yaml.safe_load(Path(task_file).read_text(encoding="utf-8"))
    task["envs"] = {**task.get("envs", {}), **envs}
    return yaml.dump(task, Dumper=_BlockScripts, sort_keys=False, width=100)


def run_script(task_file: str | Path = TASK_FILE) -> str:
    """The task's `run`: what each job executes in its clone."""
    return yaml.safe_load(Path(task_file).read_text(encoding="utf-8"))["run"]


def find_sky() -> str:
    """The `sky` command: on PATH, or the one `make skypilot-env` installs."""
    found = shutil.which("sky") or shutil.which("sky", path=str(SKY_VENV_BIN))
    if found is None:
        raise MissingExtraError("SkyPilot's `sky` command is not on PATH nor in "
                                f"{SKY_VENV_BIN}: `make skypilot-env` installs it there (or "
                                "`pip install skypilot` in a virtualenv of its own)")
    return found


def preflight() -> tuple[str, str]:
    """HEAD and origin's URL, or a one-line refusal: each job clones origin at HEAD."""
    if repo.resolve_commit("HEAD") is None:
        raise repo.RepoError("not a git repository with a commit: DVC experiments are git "
                             "commits")
    baseline, repo_url = repo.head(), repo.remote_url(REMOTE) or NO_ORIGIN
    problems = launch_problems(baseline, repo_url)
    if problems:
        raise repo.RepoError(problems[0])
    return baseline, repo_url


def launch_problems(baseline: str, repo_url: str) -> list[str]:
    changed = repo.dirty_files()
    problems = [f"uncommitted changes to tracked files ({', '.join(changed[:5])}): commit and "
                "push them first; every job runs the pushed HEAD plus its params"] if changed else []
    if repo_url == NO_ORIGIN:
        problems.append(f"no git remote {REMOTE!r}: each job clones it and pushes its "
                        f"experiment back (git remote add {REMOTE} URL)")
    elif not repo.on_remote(baseline, REMOTE):
        problems.append(f"HEAD {baseline[:7]} is on no branch of {REMOTE}: git push {REMOTE} "
                        "HEAD first (and dvc push), since each job clones it")
    return problems


class _BlockScripts(yaml.SafeDumper):
    """YAML with multi-line strings (setup, run) as literal blocks, as written by hand."""


_BlockScripts.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))
