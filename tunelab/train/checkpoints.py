"""Resumable training (the train and the align stage): checkpoints that belong to one
configuration.

The trainer writes ``checkpoint-N/`` folders (weights, optimizer, scheduler, RNG
and trainer state) into the checkpoint folder, which DVC keeps between runs
(``persist: true``). Three rules make a resumed run equal an uninterrupted one:

* A checkpoint counts only once ``tunelab_checkpoint.json`` is in it. That file
  is written last (after the trainer returned from saving), so a folder
  half-written when the process was killed is ignored.
* The folder carries a fingerprint of the stage's params, the data and the base
  model (and for align the SFT adapter). Checkpoints from another fingerprint are deleted, never resumed: a run
  with a new learning rate must not continue an old one.
* Each checkpoint holds a copy of the DVCLive logs as they were at its step, so
  resuming restores the curves without the steps logged after it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
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


def fingerprint(section_params, files, section: str = "train", data=None) -> str:
    """sha256 of a params section, of each file's bytes and of ``data`` (JSON: examples
    read in memory). Params that change no trained number (params.CHANGES_NO_RESULT) are
    left out: a run may resume across a change of them."""
    settings = params.result_settings(section_params, section)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    if data is not None:
        digest.update(hashlib.sha256(json.dumps(data, sort_keys=True).encode()).digest())
    return digest.hexdigest()


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


def claim(checkpoint_dir: str | Path, expected_fingerprint: str, stage: str = "train") -> None:
    """Make ``checkpoint_dir`` belong to ``expected_fingerprint``: delete checkpoints
    of any other params or data (only the writing process calls this)."""
    folder = Path(checkpoint_dir)
    fingerprint_path = folder / FINGERPRINT_FILE
    try:
        current = json.loads(fingerprint_path.read_text()).get("fingerprint")
    except (OSError, ValueError):
        current = None
    if current == expected_fingerprint:
        return
    stale = step_folders(folder)
    if stale:
        print(f"{stage}: {len(stale)} checkpoints in {folder}/ are from other params or data; "
              "deleting them and starting fresh")
    for path in stale:
        shutil.rmtree(path)
    write_json_atomic(fingerprint_path, {"fingerprint": expected_fingerprint})


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
