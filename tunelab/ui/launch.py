"""The Launch page: a form built from params.yaml's schema, the DVC queue behind it, and
each launched run's live progress.

The form has one field per params key, filled with the workspace's values, described as
the params reference (docs/params.md) describes it: its type and what it allows from the
schema (tunelab.config.params), its help from params.yaml's comment, both read by
tunelab.config.params_reference. A submission is validated as `tunelab validate-config` validates
params.yaml (the whole file with the changed keys in it, so the rules across keys count
too); a bad value re-shows the form with the schema's message (HTTP 400). A valid one
becomes `dvc exp run --queue -n NAME -S key=value ...` for the changed keys, and the
queue is started (experiments.repo).

The busy rule (BUSY_RULE, on the page): one run at a time. A launch while another run
is going is queued behind it: DVC's queue has one worker, which runs the queued
experiments in order. A queued run can be taken off the queue, a running one stopped.

Progress is read where the running experiment writes it: DVC's executor workspace (its
path is in `dvc exp show --json`): the stage from the stages' output, and the train
stage's step, loss and elapsed time from its log in the DVCLive folder (metrics/train).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args, get_origin

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse

from tunelab.config import params, params_reference
from tunelab.config.schema import is_model
from tunelab.errors import ParamsError
from tunelab.experiments import repo
from tunelab.experiments.sweep_space import cli_value
from tunelab.ui.pages import PageError, form_fields, one, render
from tunelab.ui.runs import Run, run_table

router = APIRouter()

BUSY_RULE = ("One run at a time: a launch while another run is going is queued behind it "
             "and starts when the runs before it finish (DVC's queue, one worker).")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a git ref part DVC accepts
NAME_FIELD = "_name"
OPEN_SECTIONS = ("train",)  # shown unfolded; the others fold
RUN_LOG = "metrics/{section}/training.log"  # tunelab.train.run_support.TrainingLog's file
STEP_LINE = re.compile(r"^step (\d+)/(\d+) t=(\d+)s (.*)$")
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


@dataclass
class FormField:
    key: str             # dotted params key, also the input's name
    kind: str            # choice | bool | int | float | text | yaml
    value: str           # as typed in the box: YAML text of the value
    options: tuple = ()
    limits: str = ""     # what the schema allows, e.g. "> 0"
    help: str = ""       # params.yaml's comment
    type_name: str = ""  # the schema's type in words: int, float or null, list of choices
    error: bool = False  # the key the refusal names


@dataclass
class FormSection:
    name: str
    help: str
    fields: list[FormField] = field(default_factory=list)


# --- the form ---------------------------------------------------------------------------

def current_values(root: Path) -> tuple[dict, str]:
    """{section: values} of the workspace's params.yaml with the defaults filled in, and
    the problem with the file if it has one (then that section's defaults are shown)."""
    values, problem = {}, ""
    for section, model in params.SECTIONS.items():
        if section == "check":  # read by no stage: not something a run changes
            continue
        try:
            values[section] = params.load(section, root / params.PARAMS_FILE).model_dump()
        except ParamsError as err:
            values[section], problem = model().model_dump(), problem or str(err)
    return values, problem


def form_sections(root: Path, values: dict, typed: dict[str, str] | None = None,
                  error_key: str = "") -> list[FormSection]:
    comments = help_texts(root)
    sections = []
    for section, current in values.items():
        form = FormSection(section, comments.of(section))
        form.fields = list(model_fields(params.SECTIONS[section], section, current, comments))
        for form_field in form.fields:
            if typed and form_field.key in typed:
                form_field.value = typed[form_field.key]
            form_field.error = form_field.key == error_key
        sections.append(form)
    return sections


def help_texts(root: Path) -> params_reference.Comments:
    """params.yaml's comments per key (none when the file has none or cannot be read)."""
    try:
        text = (root / params.PARAMS_FILE).read_text(encoding="utf-8")
        return params_reference.read_comments(text)
    except (OSError, ValueError):
        return params_reference.Comments()


def model_fields(model, prefix: str, current: dict, comments=None):
    """A FormField for every single value of ``model`` (nested sections flattened)."""
    validators = params_reference.field_validators(model)
    for name, info in model.model_fields.items():
        key, annotation = f"{prefix}.{name}", info.annotation
        if is_model(annotation):
            yield from model_fields(annotation, key, current.get(name) or {}, comments)
            continue
        kind, options = field_kind(annotation)
        rules = params_reference.allowed(annotation, [*info.metadata, *validators.get(name, [])])
        yield FormField(key, kind, yaml_text(current.get(name)), tuple(map(str, options)),
                        "" if kind == "choice" or rules == "any" else rules.replace("`", ""),
                        comments.of(key) if comments else "",
                        params_reference.type_text(annotation))


def field_kind(annotation) -> tuple[str, tuple]:
    if get_origin(annotation) is Literal:
        return "choice", get_args(annotation)
    for kind in (bool, int, float, str):
        if annotation is kind:
            return kind.__name__, ()
    return "yaml", ()  # lists, mappings, optional numbers: typed as YAML


@router.get("/launch")
def launch_page(request: Request):
    root = request.app.state.root
    values, problem = current_values(root)
    return page(request, values, problem=problem)


def page(request: Request, values: dict, status: int = 200, problem: str = "",
         typed: dict | None = None, error_key: str = "", name: str = ""):
    root = request.app.state.root
    table = run_table(root)
    active = [run for run in table.runs if run.state in ("running", "queued")]
    return render(request, "launch.html.j2", status, title="Launch",
                  sections=form_sections(root, values, typed, error_key), problem=problem,
                  busy_rule=BUSY_RULE, active=active, name=name, open_sections=OPEN_SECTIONS)


@router.post("/launch")
async def launch(request: Request):
    fields = await form_fields(request)
    # Queueing runs dvc for seconds: on a worker thread, so other pages keep answering.
    return await asyncio.to_thread(queue_run, request, fields)


def queue_run(request: Request, fields: dict[str, list[str]]):
    root = request.app.state.root
    values, problem = current_values(root)
    typed = {key: one(fields, key) for key in fields if key != NAME_FIELD}
    name = one(fields, NAME_FIELD, "").strip()

    def refuse(message: str, key: str = ""):
        return page(request, values, 400, message, typed, key, name)

    try:
        changes = changed_values(values, typed)
        validate(root, changes)
    except ParamsError as err:
        message = str(err)
        return refuse(message, message.split(":", 1)[0])
    name = name or f"ui-{time.strftime('%Y%m%d-%H%M%S')}"
    if not NAME.match(name):
        return refuse(f"run name {name!r}: letters, digits, _ . - (starting with a letter or "
                      "digit), at most 100")
    if any(run.name == name for run in run_table(root).runs):
        return refuse(f"run name {name!r} is taken: the Runs page lists it; choose another")
    repo.queue_experiment(name, {key: cli_value(value) for key, value in changes.items()})
    repo.start_queue(jobs=1)
    return RedirectResponse(f"/launch/{name}", 303)


def changed_values(values: dict, typed: dict[str, str]) -> dict:
    """{params key: value} of the form's boxes whose YAML value differs from the current."""
    known = {form_field.key: form_field for section, current in values.items()
             for form_field in model_fields(params.SECTIONS[section], section, current)}
    changes = {}
    for key, text in typed.items():
        if key not in known:
            raise ParamsError(f"{key}: not a params key this form has")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise ParamsError(f"{key}: {text!r} is not a YAML value") from None
        section, *path = key.split(".")
        current = values[section]
        for part in path:
            current = current[part]
        if isinstance(current, float) and isinstance(value, str):
            value = _number_or_text(value)  # YAML 1.1 reads 1e-4 (no dot) as text
        if value != current or type(value) is not type(current):
            changes[key] = value
    return changes


def _number_or_text(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def yaml_text(value) -> str:
    """A value as the form shows it: the -S text DVC reads back as the same value."""
    return "null" if value is None else cli_value(value)


def validate(root: Path, changes: dict) -> None:
    """params.yaml with ``changes`` in it, validated as `tunelab validate-config` does; a
    ParamsError naming the key (not the temporary file it was checked in)."""
    raw = params.read_file(root / params.PARAMS_FILE)
    for key, value in changes.items():
        *path, last = key.split(".")
        holder = raw
        for part in path:
            if not isinstance(holder.get(part), dict):
                holder[part] = {}  # absent or empty (all defaults): the key goes in
            holder = holder[part]
        holder[last] = value
    with tempfile.TemporaryDirectory(prefix="tunelab-ui-") as folder:
        checked = Path(folder) / params.PARAMS_FILE
        checked.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        try:
            params.load_all(checked)
        except ParamsError as err:
            raise ParamsError(str(err).removeprefix(f"{checked}: ")) from None


# --- a launched run: progress and stopping ----------------------------------------------

@dataclass
class Progress:
    state: str
    stage: str = ""              # the stage running now (or last run)
    step: int | None = None      # of the stage that trains (train or align)
    max_steps: int | None = None
    loss: float | None = None
    elapsed: int | None = None   # seconds of training so far
    eta: int | None = None       # seconds of training left, at the pace so far
    log_tail: str = ""           # the end of the stages' output, for a failed run


def progress(run: Run) -> Progress:
    found = Progress(run.state)
    output = read_text(run.log)
    stages = STAGE_LINE.findall(output)
    found.stage = stages[-1] if stages else ""
    if run.state == "failed":
        found.log_tail = "\n".join(output.strip().splitlines()[-25:])
    trained = [stage for stage in stages if stage in ("train", "align")]
    for stage in reversed(trained if run.workdir else []):
        # Only a stage this run has started: until then its folder holds the baseline's log.
        step_line = last_step(read_text(Path(run.workdir) / RUN_LOG.format(section=stage)))
        if step_line:
            step, total, seconds, loss = step_line
            found.step, found.max_steps, found.elapsed, found.loss = step, total, seconds, loss
            found.eta = round(seconds / step * (total - step)) if step else None
            break
    return found


def last_step(log: str) -> tuple[int, int, int, float | None] | None:
    """(step, of steps, seconds, loss) of the last training-loss line of a training.log."""
    for line in reversed(log.splitlines()):
        matched = STEP_LINE.match(line)
        loss = matched and re.search(r"(?:^| )loss=([-+\d.e]+)", matched.group(4))
        if loss:
            step, total, seconds = map(int, matched.groups()[:3])
            return step, total, seconds, float(loss.group(1))
    return None


def read_text(path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace") if path else ""
    except OSError:
        return ""


@router.get("/launch/{name}")
def run_progress_page(request: Request, name: str):
    run = run_table(request.app.state.root).find(name)
    if run.kind != "experiment":
        raise PageError(404, f"{name} is a {run.kind}, not a launched run")
    return render(request, "progress.html.j2", title=f"{name}: {run.state}", run=run,
                  progress=progress(run), busy_rule=BUSY_RULE,
                  ahead=[r.name for r in run_table(request.app.state.root).runs
                         if r.state == "running" and r.name != name])


@router.get("/launch/{name}/progress")
def run_progress(request: Request, name: str):
    run = run_table(request.app.state.root).find(name)
    return JSONResponse(progress(run).__dict__)


@router.post("/launch/{name}/stop")
def stop(request: Request, name: str):
    run = run_table(request.app.state.root).find(name)
    if run.state == "running":
        repo.kill_experiment(name)
    elif run.state == "queued":
        repo.remove_queued(name)
    else:
        raise PageError(400, f"{name} is {run.state}: only a running or queued run can be "
                        "stopped")
    return RedirectResponse("/runs", 303)
