"""The one layer through which tunelab talks to Git and DVC (GTO: its sibling, registry).

DVC's Python API does the reading: experiments by name (``Repo.experiments.ls``), the
table `dvc exp show` prints (``Repo.experiments.show``), a file at a revision
(``dvc.api.read``), a metrics diff (``Repo.metrics.diff``), the experiment queue's tasks,
applying an experiment, checking out outputs. Nothing here reads DVC's
ref layout or its message text. Subprocesses remain for two jobs those APIs do not do:

- Git's index and commits (``git status/diff/add/rm/checkout/commit``): DVC has no
  API for them, and git's own commands are its stable interface;
- running experiments (``dvc exp run``) and driving their queue (``dvc queue start``,
  ``kill``, ``remove``): they run the pipeline's stages for minutes, their output has to
  stream to the user as it comes, and DVC's process-wide state (logging, signal handlers,
  the repo lock held for the whole run, the queue's worker processes) must stay out of
  tunelab's process.

Every failure is a RepoError: one line saying what failed and what to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tunelab.errors import DataError

PathLike = str | Path


class RepoError(DataError):
    """Git, DVC or GTO refused; the message is one line saying what failed and why."""


def tool_env() -> dict:
    """The environment for dvc and the stages it runs: this interpreter's bin folder first,
    so `python` in dvc.yaml is the one with tunelab's dependencies."""
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))


# --- git: the index, commits, revisions ----------------------------------------------

def git(*args: str, root: PathLike = ".", check: bool = True) -> subprocess.CompletedProcess:
    """Run one git command in ``root``; with ``check``, a RepoError when it fails."""
    # A subprocess: DVC and GTO have no API for the index and commits; git's CLI is stable.
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}"
        raise RepoError(f"git {' '.join(args)}: {detail}")
    return result


def head(root: PathLike = ".") -> str:
    return git("rev-parse", "HEAD", root=root).stdout.strip()


def resolve_commit(revision: str, root: PathLike = ".") -> str | None:
    """The commit a git revision (branch, tag, sha, HEAD~1) names; None when it names none."""
    found = git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", root=root,
                check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def dirty_files(root: PathLike = ".") -> list[str]:
    """Tracked files that differ from HEAD, staged or not (untracked files do not count)."""
    return git("diff", "--name-only", "HEAD", root=root).stdout.splitlines()


def require_clean(root: PathLike = ".") -> None:
    """Refuse a dirty workspace: `tunelab watch` commits each promotion on top of HEAD."""
    dirty = dirty_files(root)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise RepoError(f"uncommitted changes in {shown}: commit or stash them first "
                        "(watch commits each promotion on top of a clean HEAD)")


def preflight() -> str:
    """Refuse to start a sweep where trials could not be exact DVC experiments; return HEAD."""
    if resolve_commit("HEAD") is None:
        raise RepoError("not a git repository with a commit: DVC experiments are git commits")
    if git("var", "GIT_COMMITTER_IDENT", check=False).returncode != 0:
        raise RepoError("git user.name / user.email are not set (DVC experiments are commits): "
                        "git config user.name NAME; git config user.email EMAIL")
    changed = dirty_files()
    if changed:
        shown = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
        raise RepoError(f"uncommitted changes to tracked files ({shown}): commit or stash them "
                        "first; every trial is HEAD plus its params, and a sweep leaves your "
                        "workspace as it is")
    busy = queued_or_running()
    if busy:
        raise RepoError(f"the DVC experiment queue already holds {busy} queued or running "
                        "experiments; let them finish or remove them (dvc queue status, "
                        "dvc queue remove --queued) so the sweep runs only its own trials")
    return head()


def stage(path: PathLike, root: PathLike = ".") -> None:
    """Add one file to the index (a `--temp` experiment sees only tracked files)."""
    git("add", "--", str(path), root=root)


def unstage(path: PathLike, root: PathLike = ".") -> None:
    """Take a file (relative to ``root``) out of the index; the workspace keeps it."""
    git("rm", "-q", "--cached", "--ignore-unmatch", "--", str(path), root=root)


def take_files_of(commit: str, root: PathLike = ".") -> None:
    """Make the index and workspace hold ``commit``'s git-tracked files where they differ
    from HEAD (added, changed and removed ones); untracked files are left alone."""
    removed, changed = [], []
    diff = git("diff", "--name-status", "--no-renames", "HEAD", commit, root=root).stdout
    for line in diff.splitlines():
        status, path = line.split("\t", 1)
        (removed if status == "D" else changed).append(path)
    if removed:
        git("rm", "-q", "--", *removed, root=root)
    if changed:
        git("checkout", commit, "--", *changed, root=root)


def commit_all_staged(message: str, root: PathLike = ".") -> str:
    git("commit", "-q", "-m", message, root=root)
    return head(root)


# --- files and metrics at a revision --------------------------------------------------

def show_file(rev: str, path: str, root: PathLike = ".") -> str | None:
    """The text of ``path`` at git revision or experiment commit ``rev`` (a git-tracked file
    or a DVC output); None when it is not there."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return dvc.api.read(path, repo=str(root), rev=rev, mode="r", encoding="utf-8")
    except (DvcException, FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return None


def git_files_at(rev: str, paths: list[str], root: PathLike = ".") -> dict[str, str | None]:
    """{path: its text at ``rev``, or None where Git holds no such file}, for files Git
    tracks (the outputs dvc.yaml marks ``cache: false``: metrics, DVCLive's plots). show_file
    would also look for a DVC output, building DVC's index at ``rev`` for each missing file
    (about a second each)."""
    texts = {}
    for path in paths:
        shown = git("show", f"{rev}:{path}", root=root, check=False)
        texts[path] = shown.stdout if shown.returncode == 0 else None
    return texts


def read_json_at(root: PathLike, rev: str, path: str) -> dict | None:
    """A JSON file at a revision; None when absent or not valid JSON."""
    text = show_file(rev, path, root)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def metrics_diff(baseline: str, root: PathLike = ".") -> dict:
    """`dvc metrics diff BASELINE --all`: {file (relative to the cwd): {key: {old, new, diff}}}."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as dvc_repo:
            result = dvc_repo.metrics.diff(a_rev=baseline, all=True)
            start = os.path.relpath(os.getcwd(), dvc_repo.root_dir)
    except DvcException as err:
        raise RepoError(f"dvc metrics diff {baseline}: {err}") from None
    return {os.path.relpath(path, start): keys for path, keys in result.get("diff", {}).items()}


# --- DVC experiments -------------------------------------------------------------------

def experiments(root: PathLike = ".") -> list[tuple[str, str, str]]:
    """(baseline commit, experiment name, experiment commit) of every finished experiment."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        # Opened at HEAD: a read-only view that takes no repo lock, so this works while
        # `dvc exp run --run-all` holds the workspace's lock for a whole sweep.
        with Repo(str(root), rev="HEAD", uninitialized=True) as dvc_repo:
            found = dvc_repo.experiments.ls(all_commits=True)
    except DvcException as err:
        raise RepoError(f"listing DVC experiments: {err}") from None
    return [(baseline, name, commit) for baseline, exps in found.items()
            for name, commit in exps if commit]


def experiment_refs(baseline: str | None = None, root: PathLike = ".") -> dict[str, str]:
    """{experiment name: commit} of finished experiments (on ``baseline``, or on any commit)."""
    return {name: sha for base, name, sha in experiments(root) if baseline in (None, base)}


def experiment_commit(root: PathLike, baseline: str, name: str) -> str | None:
    """The commit of experiment ``name`` run on ``baseline``; None when there is none."""
    return experiment_refs(baseline, root).get(name)


def remote_url(remote: str = "origin", root: PathLike = ".") -> str | None:
    """The URL of Git remote ``remote``; None when there is no such remote."""
    found = git("remote", "get-url", remote, root=root, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def on_remote(commit: str, remote: str = "origin", root: PathLike = ".") -> bool:
    """Whether a branch of ``remote`` holds ``commit``, as of the last fetch or push (a cloud
    run clones the remote and checks the commit out)."""
    branches = git("branch", "-r", "--contains", commit, "--list", f"{remote}/*", root=root,
                   check=False)
    return branches.returncode == 0 and bool(branches.stdout.strip())


def pull_experiments(names: list[str], remote: str = "origin", root: PathLike = ".") -> list[str]:
    """`dvc exp pull REMOTE NAME` for each of ``names`` that ``remote`` holds: the experiment's
    Git ref, and its outputs from the default DVC remote. Returns the names pulled; the others
    are not there (yet)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.experiments.exceptions import UnresolvedExpNamesError

    pulled = []
    try:
        with Repo(str(root)) as dvc_repo:
            for name in names:
                try:
                    dvc_repo.experiments.pull(remote, [name], pull_cache=True)
                except UnresolvedExpNamesError:
                    continue  # not pushed yet: the run is still going, or it failed
                pulled.append(name)
    except DvcException as err:
        raise RepoError(f"dvc exp pull {remote}: {' '.join(str(err).split())}") from None
    return pulled


def queued_or_running(root: PathLike = ".") -> int:
    """How many experiments DVC's queue holds that have not finished."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as dvc_repo:
            return sum(task["status"] in ("Queued", "Running")
                       for task in dvc_repo.experiments.celery_queue.status())
    except DvcException as err:
        raise RepoError(f"dvc queue status: {err}") from None


def dvc(*args: str) -> str:
    """A quick dvc command (queueing an experiment); its output, or a RepoError with its
    last line. A subprocess: the same `dvc` a user types, outside tunelab's process."""
    # A subprocess: queueing saves the workspace in a stash under DVC's lock, as `dvc` does.
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True,
                            text=True, env=tool_env())
    if result.returncode != 0:
        lines = (result.stderr + result.stdout).strip().splitlines() or [str(result.returncode)]
        raise RepoError(f"dvc {' '.join(args[:3])}: {lines[-1].removeprefix('ERROR: ')}")
    return result.stdout


def queue_experiment(name: str, settings: dict[str, str]) -> None:
    """`dvc exp run --queue -n NAME -S key=value ...`: HEAD plus these params, run later."""
    dvc("exp", "run", "--queue", "-n", name,
        *[arg for key, value in settings.items() for arg in ("-S", f"{key}={value}")])


def run_queue(jobs: int, log) -> subprocess.Popen:
    """Start running every queued experiment, ``jobs`` at a time, output into ``log``;
    the process exits when the queue is done (poll ``experiment_refs`` meanwhile)."""
    # A subprocess: it holds DVC's repo lock and runs workers for the whole batch.
    return subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "--run-all", "-j",
                             str(jobs)], stdout=log, stderr=subprocess.STDOUT, env=tool_env())


def run_temp_experiment(name: str, root: PathLike = ".") -> int:
    """`dvc exp run --temp -n NAME` (the pipeline in a temp copy); its exit code. The stages'
    progress streams to our stderr, the channel for progress, as they run."""
    try:
        sys.stderr.fileno()
        out = sys.stderr  # a real file: dvc writes to it as it runs
    except (AttributeError, OSError, ValueError):
        out = subprocess.PIPE  # e.g. an in-memory stderr: pass the text on at the end
    # A subprocess: the pipeline runs for minutes and its output must stream as it comes.
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", name],
                            cwd=root, env=tool_env(), text=True, stdout=out,
                            stderr=subprocess.STDOUT)
    if result.stdout:
        sys.stderr.write(result.stdout)
    return result.returncode


def apply_experiment(name: str, root: PathLike = ".") -> list[str]:
    """`dvc exp apply NAME`: its files and outputs into the workspace. Returns the outputs
    it could not check out because this experiment never built them (another pipeline's,
    e.g. multitask/); any other failure is a RepoError."""
    from dvc.exceptions import CheckoutError, DvcException
    from dvc.repo import Repo

    if name not in experiment_refs(root=root):
        raise RepoError(f"dvc exp apply {name}: no such experiment (dvc exp show lists them)")
    try:
        with Repo(str(root)) as dvc_repo:
            try:
                dvc_repo.experiments.apply(name)
            except CheckoutError as err:
                failed = {str(target) for target in err.target_infos}
                if not failed <= unbuilt_outputs(dvc_repo):
                    raise
                return sorted(failed)
    except DvcException as err:
        raise RepoError(f"dvc exp apply {name}: {' '.join(str(err).split())}") from None
    return []


def checkout_outputs(pipeline: str = "dvc.yaml", root: PathLike = ".") -> None:
    """`dvc checkout PIPELINE`: that pipeline's outputs from the DVC cache, as its lock says."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as dvc_repo:
            dvc_repo.checkout(targets=[pipeline])
    except DvcException as err:
        raise RepoError(f"dvc checkout {pipeline}: {' '.join(str(err).split())}") from None


def unbuilt_outputs(dvc_repo) -> set[str]:
    """Outputs (relative to the cwd) that no lock file records a hash for: never built."""
    return {os.path.relpath(out.fs_path) for out in dvc_repo.index.outs if not out.hash_info}


# --- the experiment table and the queue, as `tunelab ui` shows and drives them -----------

def show_experiments(commits: int = 1, root: PathLike = ".",
                     revs: list[str] | None = None) -> list[dict]:
    """`dvc exp show --json -n COMMITS`: the workspace, the last ``commits`` commits of HEAD
    and the experiments on them (finished, running, queued and failed), then the commits of
    older experiments (`dvc exp show --json --rev BASELINE`), all as that JSON: a list of
    {rev, name, data: {params, metrics, ...}, experiments: [{revs, executor, name}]}.
    With ``revs``: those commits alone (`dvc exp show --json --rev REV ...`)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as dvc_repo:
            if revs:
                states = dvc_repo.experiments.show(revs=revs, num=1, hide_workspace=True)
            else:
                states = dvc_repo.experiments.show(num=commits)
                shown = {state.rev for state in states}
                older = sorted({base for base, _, _ in experiments(root)} - shown)
                if older:
                    states += dvc_repo.experiments.show(revs=older, num=1, hide_workspace=True)
    except DvcException as err:
        raise RepoError(f"dvc exp show: {' '.join(str(err).split())}") from None
    # Through JSON as `dvc exp show --json` writes it: timestamps become ISO text.
    return json.loads(json.dumps([state.dumpd() for state in states], default=_json_text))


def _json_text(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def queue_tasks(root: PathLike = ".") -> list[dict]:
    """`dvc queue status`: {name, rev, status} of every task DVC's queue knows (Queued,
    Running, Success, Failed)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as dvc_repo:
            return [{"name": task.get("name"), "rev": task.get("rev"), "status": task["status"]}
                    for task in dvc_repo.experiments.celery_queue.status()]
    except DvcException as err:
        raise RepoError(f"dvc queue status: {err}") from None


def start_queue(jobs: int = 1) -> None:
    """`dvc queue start -j JOBS`: workers that run the queued experiments in the background,
    ``jobs`` at a time, and take experiments queued later as well (a worker stops a minute
    after the queue is empty). Unlike run_queue, nothing holds DVC's repo lock meanwhile, so
    more experiments can be queued, and queued ones removed, while one runs."""
    import tempfile

    # Its output into a file, not a pipe: the process that spawns the workers lives on
    # holding it, and reading a pipe to its end would wait for the whole queue.
    with tempfile.TemporaryFile(mode="w+") as output:
        result = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
                                stdout=output, stderr=subprocess.STDOUT, text=True,
                                env=tool_env())
        if result.returncode != 0:
            output.seek(0)
            lines = output.read().strip().splitlines() or [str(result.returncode)]
            raise RepoError(f"dvc queue start: {lines[-1].removeprefix('ERROR: ')}")


def kill_experiment(name: str) -> None:
    """`dvc queue kill NAME`: stop a running experiment (it ends as failed)."""
    dvc("queue", "kill", name)


def remove_queued(name: str) -> None:
    """`dvc queue remove NAME`: take an experiment that has not started off the queue."""
    dvc("queue", "remove", name)
