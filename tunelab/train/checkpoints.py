"""Resumable training (the train and the align stage): checkpoints that belong to one
configuration.

The trainer writes ``checkpoint-N/`` folders (weights, optimizer, scheduler, RNG
and trainer state) into the checkpoint folder, which DVC keeps between runs
(``persist: true``). Three rules make a resumed run equal an uninterrupted one:

* A checkpoint counts only once ``tunelab_checkpoint.json`` is in it. That file
  is written last (after the trainer returned from saving), so a folder
  half-written when the process was killed is ignored.
* The folder carries a fingerprint of the stage's params, the data, every file of the
  base model (weights included) and for align the SFT adapter, and of the versions of
  the libraries that compute the numbers. Checkpoints from another fingerprint are
  deleted, never resumed, with a line that says what changed: a run with a new learning
  rate, base weights or torch must not continue an old one.
* Each checkpoint holds a copy of the DVCLive logs as they were at its step, so
  resuming restores the curves without the steps logged after it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from importlib import metadata
from pathlib import Path

from tunelab.config import params
from tunelab.util.files import write_json_atomic

FINGERPRINT_FILE = "tunelab_fingerprint.json"
MARKER_FILE = "tunelab_checkpoint.json"
LIVE_COPY = "tunelab_live"
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)$")
# All a finished run leaves in the folder when it keeps no checkpoints. Git tracks it
# (models/checkpoints/ABOUT.md), so a fresh clone holds the folder exactly as dvc.lock
# records it, and `dvc repro` there reruns nothing.
ABOUT_FILE = "ABOUT.md"
ABOUT_TEXT = """\
# Training checkpoints

While `train` runs, it saves a `checkpoint-N/` folder here every `train.save_steps`
steps. A killed run resumes from the newest complete one (DVC keeps this folder
between runs: `persist: true`). A finished run keeps `train.keep_checkpoints` of
them; with 0 only this file stays.
"""


ALIGN_ABOUT_TEXT = """\
# Alignment checkpoints

While `align` runs (align.objective other than none), it saves a `checkpoint-N/` folder
here every `align.save_steps` steps. A killed run resumes from the newest complete one
(DVC keeps this folder between runs: `persist: true`). A finished run keeps none of them.
"""


# The libraries whose version can move a trained number (bitsandbytes: qlora's 4-bit
# kernels). A resumed step must run the same code as the steps before it.
LIBRARIES = ("torch", "transformers", "trl", "peft", "bitsandbytes")


def fingerprint_parts(section_params, files, base_dir, section: str = "train",
                      data=None) -> dict:
    """What a run's checkpoints belong to, part by part, so that a refusal can name the
    part that changed: the params section less the knobs that change no trained number
    (params.CHANGES_NO_RESULT: a run may resume across a change of them), the sha256 of
    each of ``files`` (the data; for align the SFT adapter), of ``data`` (examples read in
    memory), of the base model folder, and the LIBRARIES' versions."""
    settings = params.result_settings(section_params, section)
    examples = None if data is None else json.dumps(data, sort_keys=True).encode()
    return {
        "params": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(),
        "input files": [file_sha256(path) for path in files],
        "examples": None if examples is None else hashlib.sha256(examples).hexdigest(),
        "base model": folder_sha256(base_dir),
        "libraries": {name: installed_version(name) for name in LIBRARIES},
    }


def fingerprint(parts: dict) -> str:
    """One sha256 of ``fingerprint_parts``: what each checkpoint's marker records."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def folder_sha256(folder: str | Path) -> str:
    """sha256 of every file in ``folder`` (its path and bytes): the base model's weights,
    config, tokenizer and tunelab_base.json. A model.base that names the same model can
    still bring other weights (a hub id's new revision, an edited local folder, another
    GGUF dequantization). Read once per run start, never per step: 0.5 s for the reference
    base (540 MB) measured on a 2-core CPU (~1 GB/s), so about 30 s for an 8B one (32 GB
    in fp32); the read also warms the page cache for the model load that follows."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Read in 1 MiB blocks: a weight file can be larger than the memory left."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def changes(recorded: dict | None, parts: dict) -> str:
    """What differs between the parts a checkpoint folder recorded and this run's:
    "base model, trl 1.16.0 -> 1.17.0"."""
    if not recorded:
        return "what changed is not recorded"
    changed = [name for name, value in parts.items()
               if name != "libraries" and recorded.get(name) != value]
    old_versions = recorded.get("libraries", {})
    changed += [f"{name} {old_versions.get(name)} -> {version}"
                for name, version in parts["libraries"].items()
                if old_versions.get(name) != version]
    return ", ".join(changed) or "the fingerprint's formula"


def step_folders(checkpoint_dir: str | Path) -> list[Path]:
    """checkpoint-N folders, oldest first."""
    folder = Path(checkpoint_dir)
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)] \
        if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))


def is_complete(checkpoint: Path, expected_fingerprint: str) -> bool:
    try:
        marker = json.loads((checkpoint / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (marker.get("fingerprint") == expected_fingerprint
            and (checkpoint / "trainer_state.json").is_file())


def claim(checkpoint_dir: str | Path, parts: dict, stage: str = "train") -> None:
    """Make ``checkpoint_dir`` belong to the fingerprint of ``parts``: delete checkpoints
    of any other params, data, base model or library versions, saying which changed
    (only the writing process calls this)."""
    folder = Path(checkpoint_dir)
    fingerprint_path = folder / FINGERPRINT_FILE
    try:
        recorded = json.loads(fingerprint_path.read_text())
    except (OSError, ValueError):
        recorded = {}
    if recorded.get("fingerprint") == fingerprint(parts):
        return
    stale = step_folders(folder)
    if stale:
        print(f"{stage}: {len(stale)} checkpoints in {folder}/ do not match this run "
              f"(changed: {changes(recorded.get('parts'), parts)}); "
              "deleting them and starting fresh")
    for path in stale:
        shutil.rmtree(path)
    write_json_atomic(fingerprint_path, {"fingerprint": fingerprint(parts), "parts": parts})


def latest(checkpoint_dir: str | Path, expected_fingerprint: str) -> Path | None:
    """The newest complete checkpoint of ``expected_fingerprint``, or None."""
    complete = [p for p in step_folders(checkpoint_dir) if is_complete(p, expected_fingerprint)]
    return complete[-1] if complete else None


def mark_complete(checkpoint: Path, expected_fingerprint: str, live_dir: str | Path,
                  total_loss: float) -> None:
    """Copy the live logs into ``checkpoint``, then write its marker (last)."""
    live = Path(live_dir)
    copy = checkpoint / LIVE_COPY
    if copy.exists():
        shutil.rmtree(copy)
    copy.mkdir()
    for name in ("plots", "metrics.json", "params.yaml", "training.log"):
        source = live / name
        if source.is_dir():
            shutil.copytree(source, copy / name)
        elif source.is_file():
            shutil.copy2(source, copy / name)
    write_json_atomic(checkpoint / MARKER_FILE, {
        "fingerprint": expected_fingerprint, "step": int(checkpoint.name.split("-")[1]),
        "total_loss": total_loss})


def read_marker(checkpoint: Path) -> dict:
    return json.loads((checkpoint / MARKER_FILE).read_text())


def restore_live(checkpoint: Path, live_dir: str | Path) -> None:
    """Put the live logs back as they were when ``checkpoint`` was saved."""
    live = Path(live_dir)
    live.mkdir(parents=True, exist_ok=True)
    for source in (checkpoint / LIVE_COPY).iterdir():
        target = live / source.name
        if target.is_dir():
            shutil.rmtree(target)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def clean(checkpoint_dir: str | Path, keep: int, about: str = ABOUT_TEXT) -> None:
    """After a finished run: delete all but the newest ``keep`` checkpoints; with 0,
    everything else too (fingerprint, the trainer's model card) but ABOUT.md (``about``)."""
    folders = step_folders(checkpoint_dir)
    for path in folders[:max(len(folders) - keep, 0)]:
        shutil.rmtree(path)
    if keep > 0:
        return
    folder = Path(checkpoint_dir)
    for path in folder.iterdir():
        if path.name != ABOUT_FILE:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    about_file = folder / ABOUT_FILE
    if not about_file.is_file() or about_file.read_text(encoding="utf-8") != about:
        about_file.write_text(about, encoding="utf-8")
