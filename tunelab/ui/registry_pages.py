"""The Registry page: dvc.yaml's artifacts, their GTO versions and stages, and the two
changes a person makes there, each shown on a confirmation page before it is done:

- assign a stage to a version (`gto assign`: the tag ``<artifact>#<stage>#N``);
- promote a finished experiment as `tunelab watch` promotes one (experiments.promotion):
  its files and outputs into the workspace, a commit of them on top of HEAD, a new
  version of each artifact the commit holds, assigned to the stage chosen.

GTO is reached through experiments.registry, the commit through experiments.promotion.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from tunelab.experiments import promotion, registry, repo
from tunelab.ui.pages import PageError, form_fields, one, render
from tunelab.ui.runs import run_table

router = APIRouter()

CONFIRM = "yes"


@router.get("/registry")
def registry_page(request: Request, done: str = ""):
    root = request.app.state.root
    artifacts = registry.artifacts(root)
    table = run_table(root)
    rows = {name: registry.versions(root, name) for name in artifacts}
    run_of = {run.rev: run.name for run in table.runs if run.rev}
    promotable = [run for run in table.runs if run.kind == "experiment" and run.finished]
    return render(request, "registry.html.j2", title="Registry", artifacts=artifacts, rows=rows,
                  stages=registry.STAGES, run_of=run_of, promotable=promotable, done=done,
                  dirty=repo.dirty_files(root))


@router.post("/registry/assign")
async def assign(request: Request):
    fields = await form_fields(request)
    return await asyncio.to_thread(assign_stage, request, fields)  # git and GTO: seconds


def assign_stage(request: Request, fields: dict[str, list[str]]):
    root = request.app.state.root
    artifact, version, stage = (one(fields, key) for key in ("artifact", "version", "stage"))
    if artifact not in registry.artifacts(root):
        raise PageError(404, f"no artifact {artifact!r} in dvc.yaml's artifacts")
    found = next((v for v in registry.versions(root, artifact) if v.version == version), None)
    if found is None:
        raise PageError(404, f"{artifact} has no registered version {version!r}")
    if stage not in registry.STAGES:
        raise PageError(400, f"stage {stage!r}: the registry's stages are "
                        f"{', '.join(registry.STAGES)}")
    if one(fields, "confirm", "") != CONFIRM:
        held = registry.version_in_stage(root, artifact, stage)
        return confirm_page(request, "/registry/assign", fields, [
            f"Assign {artifact} {version} (commit {found.commit[:7]}) to stage {stage}.",
            f"{stage} now holds {held}; after this it holds {version}." if held
            else f"No version is in {stage} yet.",
            f"This adds the Git tag {artifact}#{stage}#N (gto assign); "
            f"`tunelab serve --artifact {artifact}@{stage}` will serve {version}."])
    registry.assign_stage(root, artifact, version, stage)
    return done(f"{artifact} {version} is in {stage}")


@router.post("/registry/promote")
async def promote(request: Request):
    fields = await form_fields(request)
    return await asyncio.to_thread(promote_run, request, fields)  # DVC checkout: seconds


def promote_run(request: Request, fields: dict[str, list[str]]):
    root = request.app.state.root
    name, stage = one(fields, "run"), one(fields, "stage")
    run = run_table(root).find(name)  # 404 for an unknown run
    if run.kind != "experiment" or not run.finished:
        raise PageError(400, f"{name}: only a finished experiment can be promoted (a commit "
                        "is registered with gto register)")
    if stage not in registry.STAGES:
        raise PageError(400, f"stage {stage!r}: the registry's stages are "
                        f"{', '.join(registry.STAGES)}")
    repo.require_clean(root)  # a RepoError page naming the files
    if one(fields, "confirm", "") != CONFIRM:
        return confirm_page(request, "/registry/promote", fields, [
            f"Promote experiment {name} (commit {run.rev[:7]}) to stage {stage}.",
            f"Its files and outputs go into the workspace and are committed on top of HEAD "
            f"({repo.head(root)[:7]}), as `tunelab watch` promotes a run.",
            f"Each artifact the commit holds gets its next version, assigned to {stage}."])
    try:
        result = promotion.promote(root, run.rev, f"Promote {name} to {stage} (tunelab ui)",
                                   stage)
    except promotion.WatchError as err:  # e.g. outputs DVC would not overwrite: one line
        raise PageError(400, str(err)) from None
    return done(f"{name} promoted: commit {result.commit[:7]}, "
                f"{', '.join(result.registered) or 'no artifact'} in {stage}")


def confirm_page(request: Request, action: str, fields: dict, lines: list[str]):
    hidden = {key: values[-1] for key, values in fields.items() if key != "confirm"}
    return render(request, "confirm.html.j2", title="Confirm", action=action, hidden=hidden,
                  lines=lines, confirm=CONFIRM)


def done(message: str):
    return RedirectResponse(f"/registry?done={quote(message)}", 303)
