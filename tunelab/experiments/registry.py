"""The model registry: versions and stages of dvc.yaml's ``artifacts:``, and a version's files.

GTO keeps the registry in Git tags, so it travels with `git push`/`git clone`:
``<artifact>@vX.Y.Z`` (an annotated tag, registered with ``gto.api.register``) names the
commit of a version, ``<artifact>#<stage>#N`` (``gto.api.assign``) puts a version in a stage
(the newest assignment wins). `gto show` lists both. A version's files are the artifact's
path as dvc.yaml declared it at that commit, fetched through DVC (``dvc.repo.Repo.get``: the
local cache, else the default remote), so `tunelab serve --artifact NAME@prod` serves what
was promoted even after the workspace (its files or its dvc.yaml) moved on. This module is
the GTO half of the Git/DVC/GTO layer (experiments.repo holds the Git and DVC half).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.experiments.repo import PathLike, RepoError, git, resolve_commit

# The stages a version can be assigned to (also the repo's .gto `stages:`, which makes GTO
# refuse any other): staging = promoted by `tunelab watch`, prod = what deployments serve.
STAGES = ("staging", "prod")
VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
BASE_PATH = "models/base"  # an adapter is served on the base it was trained from


@dataclass(frozen=True)
class ArtifactVersion:
    """One registered version: what `tunelab serve --artifact` resolves a reference to."""
    name: str
    version: str
    commit: str
    path: str            # the artifact's path in the repo (dvc.yaml artifacts: NAME: path)
    stage: str | None    # the stage the reference named, if it named one


def artifacts(root: PathLike, commit: str | None = None) -> dict[str, str]:
    """The root dvc.yaml's artifacts as {name: path}: the working tree's, or the one
    committed at ``commit``; none if unreadable."""
    if commit is None:
        try:
            text = (Path(root) / "dvc.yaml").read_text()
        except OSError:
            return {}
    else:
        shown = git("show", f"{commit}:dvc.yaml", root=root, check=False)
        if shown.returncode != 0:
            return {}
        text = shown.stdout
    try:
        declared = (yaml.safe_load(text) or {}).get("artifacts")
    except yaml.YAMLError:
        return {}
    return {name: spec["path"].rstrip("/") for name, spec in (declared or {}).items()
            if isinstance(spec, dict) and isinstance(spec.get("path"), str)}


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``NAME@vX.Y.Z`` -> (NAME, version, None); ``NAME@STAGE`` -> (NAME, None, STAGE)."""
    name, at, which = reference.rpartition("@")
    if not at or not name or not which:
        raise RepoError(f"artifact {reference!r}: write NAME@STAGE ({'|'.join(STAGES)}) or "
                        "NAME@vX.Y.Z, e.g. ticket-triage-adapter@prod")
    if VERSION.match(which):
        return name, which, None
    if which not in STAGES:
        raise RepoError(f"artifact {reference!r}: {which!r} is neither a version (vX.Y.Z) "
                        f"nor a stage ({', '.join(STAGES)})")
    return name, None, which


# --- registering and assigning ---------------------------------------------------------

def latest_version(root: PathLike, artifact: str) -> tuple[int, int, int] | None:
    """The highest registered ``<artifact>@vX.Y.Z`` as (X, Y, Z); None before the first.
    GTO counts annotated tags only, as `gto show` and `dvc artifacts get` do."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        version = gto.api.find_latest_version(str(root), artifact)
    except ArtifactNotFound:
        return None
    if version is None:
        return None
    major, minor, patch = version.version.lstrip("v").split(".")
    return int(major), int(minor), int(patch)


def next_version(root: PathLike, artifact: str) -> str:
    """GTO's default: bump the patch of the highest registered version; v0.0.1 first."""
    major, minor, patch = latest_version(root, artifact) or (0, 0, 0)
    return f"v{major}.{minor}.{patch + 1}"


def register_version(root: PathLike, artifact: str, commit: str, version: str,
                     message: str) -> str:
    """GTO-register ``commit`` as ``artifact`` ``version``: the annotated tag
    ``<artifact>@<version>`` with ``message``. Returns the tag's name."""
    import gto.api
    from gto.exceptions import GTOException

    try:
        registered = gto.api.register(str(root), artifact, commit, version=version,
                                      message=message)
    except GTOException as err:
        raise RepoError(f"gto register {artifact} {commit[:8]} {version}: {err}") from None
    return registered.tag


def assign_stage(root: PathLike, artifact: str, version: str, stage: str,
                 message: str | None = None) -> str:
    """Put ``artifact`` ``version`` in ``stage`` (the tag ``<artifact>#<stage>#N``)."""
    import gto.api
    from gto.exceptions import GTOException

    if stage not in STAGES:
        raise RepoError(f"stage {stage!r}: the registry's stages are {', '.join(STAGES)}")
    try:
        assigned = gto.api.assign(str(root), artifact, stage, version=version,
                                  message=message or f"{artifact} {version} to {stage}")
    except GTOException as err:
        raise RepoError(f"gto assign {artifact} {version} {stage}: {err}") from None
    return assigned.tag


def unassign_stage(root: PathLike, artifact: str, version: str, stage: str,
                   message: str) -> None:
    """Take ``stage`` from ``artifact`` ``version`` (the tag ``<artifact>#<stage>!#N``), so
    `gto show` and NAME@STAGE no longer name it."""
    import gto.api
    from gto.exceptions import GTOException

    try:
        gto.api.unassign(str(root), artifact, version=version, stage=stage, message=message)
    except GTOException as err:
        raise RepoError(f"gto unassign {artifact} {version} {stage}: {err}") from None


def stages_of(root: PathLike, artifact: str) -> dict[str, str]:
    """{stage: version} as `gto show` lists them: the version each stage holds now."""
    held = {stage: version_in_stage(root, artifact, stage) for stage in STAGES}
    return {stage: version for stage, version in held.items() if version}


@dataclass(frozen=True)
class RegisteredVersion:
    """One row of `gto show ARTIFACT`: a version, its commit and the stages it holds now."""
    artifact: str
    version: str
    commit: str
    created: str              # when it was registered (ISO time)
    stages: tuple[str, ...]   # the stages whose newest assignment is this version


def versions(root: PathLike, artifact: str) -> list[RegisteredVersion]:
    """`gto show ARTIFACT`: every registered version, newest first; none before the first."""
    import gto.api
    from gto.exceptions import ArtifactNotFound, GTOException

    try:
        shown = gto.api.show(str(root), artifact, registered_only=True)
    except ArtifactNotFound:
        return []
    except GTOException as err:
        raise RepoError(f"gto show {artifact}: {err}") from None
    held = stages_of(root, artifact)
    return [RegisteredVersion(artifact, row["version"], row["commit_hexsha"],
                              str(row["created_at"]),
                              tuple(stage for stage, version in held.items()
                                    if version == row["version"]))
            for row in shown]


# --- resolving and fetching -------------------------------------------------------------

def resolve(root: PathLike, reference: str) -> ArtifactVersion:
    """The registered version ``reference`` (NAME@STAGE or NAME@vX.Y.Z) names, with the
    artifact's path as the dvc.yaml of that version's commit declares it: a later dvc.yaml
    may have moved it, and the files are fetched at the commit."""
    name, version, stage = parse_reference(reference)
    version = version or version_in_stage(root, name, stage)
    commit = version and resolve_commit(f"refs/tags/{name}@{version}^{{commit}}", root)
    if not commit:
        raise unresolved(root, name, version, stage)
    declared = artifacts(root, commit)
    if name not in declared:
        raise RepoError(f"{name}@{version}: dvc.yaml at its commit {commit[:8]} declares no "
                        f"artifact {name} ({', '.join(declared) or 'none'}), so its path "
                        "is unknown")
    return ArtifactVersion(name, version, commit, declared[name], stage)


def version_in_stage(root: PathLike, name: str, stage: str) -> str | None:
    """The version ``stage`` holds now (the newest assignment); None when it holds none."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        in_stage = gto.api.find_versions_in_stage(str(root), name, stage)
    except ArtifactNotFound:
        return None  # no version registered at all
    return in_stage[0].version if in_stage else None


def unresolved(root: PathLike, name: str, version: str | None, stage: str | None) -> RepoError:
    """Why a reference names no commit: a name the working tree's dvc.yaml does not
    declare (most likely a typo), an empty stage, or a version not registered here."""
    declared = artifacts(root)
    if name not in declared:
        return RepoError(f"artifact {name!r} is not in dvc.yaml's artifacts "
                         f"({', '.join(declared) or 'none'})")
    if version is None:
        return RepoError(f"no version of {name} is in stage {stage}: assign one with "
                         f"`gto assign {name} --version vX.Y.Z --stage {stage}`")
    return RepoError(f"{name}@{version} is not registered here (`gto show {name}` lists the "
                     "versions; `git fetch --tags` brings a teammate's)")


def fetch(root: PathLike, path: str, commit: str, out: PathLike) -> Path:
    """``path`` as it was at ``commit`` into ``out``, through DVC: from this repo's cache,
    else its default remote (`dvc get` of a local repo)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        Repo.get(str(Path(root).resolve()), path, out=str(out), rev=commit)
    except DvcException as err:
        raise RepoError(f"dvc get {path} at {commit[:8]}: {err} (is it pushed? `dvc pull` "
                        "in the repo that ran it, or `dvc push` there)") from None
    return Path(out)


@dataclass
class ServableFiles:
    """What `tunelab serve` needs for one fetched version: a base (a transformers model
    folder) and named adapters, or named GGUF files."""
    version: ArtifactVersion
    base: Path | None
    adapters: list[tuple[str, Path]]
    gguf: list[tuple[str, Path]]


def fetch_for_serving(root: PathLike, reference: str, folder: PathLike) -> ServableFiles:
    """The files of ``reference`` in ``folder``, sorted for the server: an adapter (the SFT
    or the aligned one, both LoRAs) with the base of the same commit (served as NAME), a
    whole model (train.method full) as the base, a GGUF export's ``tuned-TYPE.gguf`` files
    each as NAME:TYPE."""
    found = resolve(root, reference)
    folder = Path(folder)
    files = fetch(root, found.path, found.commit, folder / "artifact")
    tuned = sorted(files.glob("tuned-*.gguf"))
    if tuned:
        return ServableFiles(found, None, [], [(f"{found.name}:{path.stem[len('tuned-'):]}", path)
                                               for path in tuned])
    if (files / "config.json").is_file():
        return ServableFiles(found, files, [], [])
    if not (files / "adapter_config.json").is_file():
        raise RepoError(f"{found.name}@{found.version}: {found.path} holds neither an adapter, "
                        "a model nor tuned-*.gguf files: nothing to serve")
    base = fetch(root, BASE_PATH, found.commit, folder / "base")
    return ServableFiles(found, base, [(found.name, files)], [])
