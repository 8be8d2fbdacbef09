"""The Playground page: one message, answered side by side by a run's base model, its
tuned model and its GGUF exports, through `tunelab serve`'s engines.

The models are the run's own files: the workspace's, or those of the run's commit,
fetched through DVC (experiments.registry.fetch: the local cache, else the default
remote) into a folder that lives as long as the app. The transformers engine
(tunelab.serve.engine) serves the base with the tuned LoRA adapter on it (a full
fine-tune: the tuned model alone); the GGUF engine (tunelab.serve.gguf_engine) serves
the export stage's tuned-TYPE.gguf files. Each applies the chat template and stops at
the stop tokens the run used (the base's tokenizer and generation config, or the
template the GGUF file carries), as `tunelab serve` does. Answers are greedy, so the
same message gets the same answer.

Models load on first use, and stay loaded: one transformers engine and one GGUF engine at
a time (a CPU holds them easily); another run's models replace them.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request

from tunelab.chat import reasoning
from tunelab.experiments import registry
from tunelab.serve import server
from tunelab.serve.schemas import ApiError
from tunelab.ui.pages import PageError, form_fields, one, render
from tunelab.ui.runs import Run, find_run, run_table

router = APIRouter()

BASE_DIR, ADAPTER_DIR, ALIGNED_DIR, GGUF_DIR = ("models/base", "models/adapter",
                                               "models/aligned", "models/gguf")
MAX_NEW_TOKENS = 512          # the most a form may ask for (`tunelab serve`'s default limit)
DEFAULT_MESSAGE = ""


@dataclass(frozen=True)
class ModelChoice:
    name: str                 # as the page names it: base, tuned, aligned, gguf:q8_0
    kind: str                 # transformers | gguf: the engine that serves it
    served_as: str            # its name in that engine
    path: str                 # its files in the run: models/adapter, models/gguf/tuned-q8_0.gguf


def model_choices(run: Run, root: Path) -> list[ModelChoice]:
    """The models a run has: the base, its final model (the aligned adapter where the align
    stage trained one) and a GGUF per export type. Listed from the run's params; the
    workspace's only where the files are there."""
    aligned = run.params.get("align.objective", "none") != "none"
    tuned_name, tuned_path = ("aligned", ALIGNED_DIR) if aligned else ("tuned", ADAPTER_DIR)
    quantizations = run.params.get("export.quantizations") or []
    choices = [ModelChoice("base", "transformers", "base", BASE_DIR),
               ModelChoice(tuned_name, "transformers", tuned_name, tuned_path),
               *(ModelChoice(f"gguf:{kind}", "gguf", f"gguf:{kind}",
                             f"{GGUF_DIR}/tuned-{kind}.gguf") for kind in quantizations)]
    if run.kind == "workspace":
        choices = [choice for choice in choices if (root / choice.path).exists()]
    return choices


class LoadedModels:
    """The engines loaded so far: one per kind (transformers, gguf), each for one run, and
    the run files fetched for them. One chat at a time uses them (``lock``)."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.engines: dict[str, tuple[tuple, object]] = {}  # kind -> (what it serves, engine)
        self.fetched = Path(tempfile.mkdtemp(prefix="tunelab-ui-models-"))
        self._fetching = threading.Lock()

    def engine(self, root: Path, run: Run, choice: ModelChoice, choices: list[ModelChoice]):
        """The engine serving ``choice``, loading it (and unloading the kind's other) first."""
        same_kind = tuple(c for c in choices if c.kind == choice.kind)
        key = (run.rev or "workspace", same_kind)
        loaded = self.engines.get(choice.kind)
        if loaded and loaded[0] == key:
            return loaded[1]
        if loaded:
            loaded[1].close()
            del self.engines[choice.kind]
        if choice.kind == "gguf":
            files = [(c.served_as, self.files(root, run, c.path)) for c in same_kind]
            engine = server.load_engine(None, [], gguf=files)
        else:
            engine = self.transformers_engine(root, run, same_kind)
        self.engines[choice.kind] = (key, engine)
        return engine

    def transformers_engine(self, root: Path, run: Run, choices: tuple[ModelChoice, ...]):
        base = self.files(root, run, BASE_DIR)
        tuned = [c for c in choices if c.path != BASE_DIR]
        adapters = [(c.served_as, self.files(root, run, c.path)) for c in tuned]
        full = [(name, path) for name, path in adapters
                if not (path / "adapter_config.json").is_file()]
        if full:  # train.method full: the tuned model is a whole model, served on its own
            raise PageError(400, f"{run.name}'s {full[0][0]} model is a full fine-tune, not an "
                            "adapter: chat with it through `tunelab serve --base "
                            f"{full[0][1]}` (the playground serves a base and its adapters)")
        return server.load_engine(base, adapters)

    def files(self, root: Path, run: Run, path: str) -> Path:
        """``path`` of the run: in the workspace, or fetched at the run's commit."""
        if run.kind == "workspace":
            return root / path
        target = self.fetched / run.rev / path
        with self._fetching:
            if not target.exists():
                partial = target.with_name(target.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                registry.fetch(root, path, run.rev, partial)
                partial.rename(target)
        return target

    def close(self) -> None:
        for _, engine in self.engines.values():
            engine.close()
        self.engines.clear()
        shutil.rmtree(self.fetched, ignore_errors=True)


@dataclass
class Answer:
    model: str
    text: str = ""
    thought: str = ""
    finish_reason: str = ""
    tokens: int = 0
    seconds: float = 0.0
    error: str = ""


# --- the page ---------------------------------------------------------------------------

def finished_run(request: Request, name: str | None) -> tuple[Run | None, list[Run]]:
    table = run_table(request.app.state.root)
    finished = [run for run in table.runs if run.finished]
    if not name:
        return None, finished
    run = find_run(request.app.state.root, name)  # 404 for an unknown run
    if not run.finished:
        raise PageError(400, f"{name} is {run.state}: its models are not there yet")
    return run, finished


@router.get("/playground")
def playground_page(request: Request, run: str = ""):
    chosen, finished = finished_run(request, run)
    if chosen is None:
        chosen = next((r for r in finished if model_choices(r, request.app.state.root)), None)
    return show(request, chosen, finished)


def show(request: Request, run: Run | None, finished: list[Run], status: int = 200,
         message: str = DEFAULT_MESSAGE, system: str = "", picked: list[str] | None = None,
         max_new_tokens: int | None = None, answers: list[Answer] | None = None, error: str = ""):
    root = request.app.state.root
    choices = model_choices(run, root) if run else []
    return render(request, "playground.html.j2", status, title="Playground", run=run,
                  runs=finished, choices=choices,
                  picked=picked if picked is not None else [c.name for c in choices],
                  message=message, system=system, answers=answers or [], error=error,
                  max_new_tokens=max_new_tokens or default_max_new_tokens(run))


def default_max_new_tokens(run: Run | None) -> int:
    value = run.params.get("evaluate.max_new_tokens") if run else None
    return min(value, MAX_NEW_TOKENS) if isinstance(value, int) and value > 0 else 64


@router.post("/playground")
async def chat(request: Request):
    fields = await form_fields(request)
    root = request.app.state.root
    run, finished = await asyncio.to_thread(finished_run, request, one(fields, "run"))
    choices = {choice.name: choice for choice in model_choices(run, root)}
    picked = fields.get("model") or []
    unknown = [name for name in picked if name not in choices]
    if unknown:
        raise PageError(404, f"no model {unknown[0]!r} in run {run.name} (it has: "
                        f"{', '.join(choices) or 'none'})")
    message, system = one(fields, "message", "").strip(), one(fields, "system", "").strip()
    limit = one(fields, "max_new_tokens", str(default_max_new_tokens(run)))

    def refuse(error: str):
        return show(request, run, finished, 400, message, system, picked, None, None, error)

    if not limit.isdigit() or not 1 <= int(limit) <= MAX_NEW_TOKENS:
        return refuse(f"max new tokens: a whole number 1..{MAX_NEW_TOKENS}, got {limit!r}")
    if not message:
        return refuse("write a message first")
    if not picked:
        return refuse("tick at least one model")
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": message}]
    models: LoadedModels = request.app.state.models
    answers = []
    async with models.lock:
        for name in picked:
            answers.append(await answer(models, root, run, choices[name], list(choices.values()),
                                        messages, int(limit)))
    return show(request, run, finished, 200, message, system, picked, int(limit), answers)


async def answer(models: LoadedModels, root: Path, run: Run, choice: ModelChoice,
                 choices: list[ModelChoice], messages: list[dict], limit: int) -> Answer:
    """One model's greedy answer, or the reason it has none."""
    from tunelab.errors import USER_ERRORS

    result = Answer(choice.name)
    started = time.monotonic()
    try:
        engine = await asyncio.to_thread(models.engine, root, run, choice, choices)
        prompt = engine.chat_prompt(choice.served_as, messages)
        room = limit if engine.max_context is None else min(limit, engine.max_context - len(prompt))
        if room < 1:
            raise ApiError(400, f"the message ({len(prompt)} tokens) fills the model's context "
                           f"of {engine.max_context} tokens")
        job = engine.submit(model=choice.served_as, prompt_ids=prompt, constraint=None,
                            max_new_tokens=room, temperature=0.0, top_p=1.0, seed=0, stops=[])
        parts = []
        async for event in job.events():
            if event[0] == "text":
                parts.append(event[1])
            elif event[0] == "error":
                raise ApiError(500, event[1])
            else:
                result.finish_reason, result.tokens = event[1], event[3]
        result.thought, result.text = reasoning.split("".join(parts),
                                                      engine.chat_template(choice.served_as))
        result.thought = result.thought or ""
    except ApiError as err:
        result.error = err.message
    except PageError as err:
        result.error = err.message
    except USER_ERRORS as err:  # a file DVC cannot fetch, a model that does not load
        result.error = str(err)
    result.seconds = round(time.monotonic() - started, 1)
    return result
