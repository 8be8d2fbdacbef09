"""The package's shape: no import circles, imports flow one way, and every DVC stage's
deps cover exactly the tunelab files its script imports (so editing a line of code reruns
precisely the stages that run it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tunelab"

# What each part of tunelab may import (besides itself); the same words are in each
# subpackage's __init__.py docstring. Top-level modules count as parts too.
ALLOWED_IMPORTS = {
    "errors": set(),
    "util": {"errors"},
    "chat": {"util", "errors"},
    "config": {"chat", "util", "errors"},
    "data": {"chat", "config", "util", "errors"},
    "models": {"chat", "config", "util", "errors"},
    "train": {"data", "models", "chat", "config", "util", "errors"},
    "eval": {"data", "models", "chat", "config", "util", "errors"},
    "report": {"eval", "config", "util", "errors"},
    "adapters": {"eval", "models", "data", "chat", "config", "util", "errors"},
    "deploy": {"adapters", "eval", "models", "data", "chat", "config", "util", "errors"},
    "serve": {"deploy", "eval", "models", "data", "chat", "config", "util", "errors"},
    "experiments": {"eval", "report", "train", "data", "models", "chat", "config", "util",
                    "errors"},
    "bench": {"serve", "train", "eval", "models", "data", "chat", "config", "util", "errors"},
    "judge": {"deploy", "eval", "models", "data", "chat", "config", "util", "errors"},
    "pipeline": {"config", "errors"},
    "ui": {"experiments", "serve", "report", "eval", "data", "models", "chat", "config", "util",
           "errors"},
    "cli": {"experiments", "adapters", "deploy", "serve", "bench", "judge", "ui", "eval", "report",
            "train", "data", "models", "chat", "config", "util", "errors"},
}

# Files a module reads at run time that are not Python: a stage that runs the module
# depends on them too.
DATA_FILES = {
    "tunelab/report/html_page.py": ["tunelab/report/templates/report.html.j2"],
}


def module_file(dotted: str) -> Path | None:
    path = REPO.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every tunelab module ``path`` imports, at any depth of its code (a function-level
    import runs too when the function does)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "tunelab"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "tunelab":
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= {name for name in submodules if module_file(name)} or {node.module}
            if any(not module_file(name) for name in submodules):
                found.add(node.module)
    return found


def with_packages(dotted: str) -> list[str]:
    """A module and the packages Python runs on the way to it."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(script: Path) -> set[str]:
    """Repo-relative paths of every tunelab file (and data file) ``script`` runs."""
    seen_files: set[Path] = set()
    queue = sorted(imported_modules(script))
    while queue:
        for name in with_packages(queue.pop()):
            path = module_file(name)
            if path is None:
                raise AssertionError(f"{script.name} imports {name}, which does not exist")
            if path not in seen_files:
                seen_files.add(path)
                queue.extend(imported_modules(path))
    relative = {p.relative_to(REPO).as_posix() for p in seen_files}
    for module, data in DATA_FILES.items():
        if module in relative:
            relative |= set(data)
    return relative


def stages(dvc_file: Path):
    for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
        script = stage["cmd"].split()[1]
        yield name, stage, REPO / script


def declared_tunelab_deps(stage) -> set[str]:
    return {dep for dep in stage["deps"] if dep.split("/")[0] == "tunelab"}


PIPELINES = [REPO / "dvc.yaml", REPO / "multitask" / "dvc.yaml"]
STAGES = [(dvc_file, name, stage, script)
          for dvc_file in PIPELINES for name, stage, script in stages(dvc_file)]


@pytest.mark.parametrize("dvc_file, name, stage, script", STAGES,
                         ids=[f"{d.parent.name}:{n}" for d, n, _, _ in STAGES])
def test_stage_deps_are_exactly_what_its_script_imports(dvc_file, name, stage, script):
    where = dvc_file.relative_to(REPO)
    assert script.relative_to(REPO).as_posix() in stage["deps"], \
        f"{where}: stage {name}: deps miss its script {script.relative_to(REPO)}"
    needed = closure(script)
    declared = declared_tunelab_deps(stage)
    missing = sorted(needed - declared)
    extra = sorted(declared - needed)
    assert not missing, (f"{where}: stage {name}: deps miss {', '.join(missing)} "
                         f"(imported by {script.relative_to(REPO)})")
    assert not extra, (f"{where}: stage {name}: deps list {', '.join(extra)}, which "
                       f"{script.relative_to(REPO)} never imports (a change there would rerun "
                       "it for nothing)")


def test_closure_follows_imports_into_packages_and_data_files():
    report = closure(REPO / "stages" / "report.py")
    assert {"tunelab/__init__.py", "tunelab/report/__init__.py", "tunelab/report/html_page.py",
            "tunelab/report/templates/report.html.j2", "tunelab/pipeline.py",
            "tunelab/errors.py"} <= report
    # The train stage never runs the benchmark, the server or the CLI.
    train = closure(REPO / "stages" / "train.py")
    assert not [path for path in train if path.startswith(("tunelab/bench", "tunelab/serve",
                                                            "tunelab/cli"))]


def all_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_no_import_circles():
    modules = all_modules()
    graph = {name: sorted(m for m in imported_modules(path) if m in modules and m != name)
             for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name, trail):
        state[name] = "open"
        for target in graph[name]:
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def part_of(dotted: str) -> str:
    return dotted.split(".")[1] if dotted.count(".") else "tunelab"


def test_imports_flow_one_way():
    wrong = []
    for name, path in all_modules().items():
        part = part_of(name)
        if part == "tunelab":
            continue
        assert part in ALLOWED_IMPORTS, f"{path.relative_to(REPO)}: {part} is not in ALLOWED_IMPORTS"
        for target in imported_modules(path):
            other = part_of(target)
            if other not in (part, "tunelab") and other not in ALLOWED_IMPORTS[part]:
                wrong.append(f"{path.relative_to(REPO)} imports {target} ({part} may not "
                             f"import {other})")
    assert not wrong, "\n".join(wrong)


def test_every_subpackage_says_what_it_owns_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "may import" in " ".join(doc.split()).lower(), f"{init.relative_to(REPO)}: docstring must say what it may import"
        assert "TODO" not in doc, f"{init.relative_to(REPO)}: docstring is a placeholder"


def test_no_module_is_named_like_the_standard_library():
    import sys

    clashes = [path.relative_to(REPO).as_posix() for path in PACKAGE.rglob("*.py")
               if path.stem in sys.stdlib_module_names]
    assert not clashes, f"named like standard-library modules: {clashes}"


# Scripts that run where tunelab is not installed: they import nothing from tunelab and
# parse their own arguments.
STANDALONE_SCRIPTS: set[str] = set()  # none now: the GPU check runs tunelab's own trainer


def test_argparse_lives_only_in_the_cli():
    users = [path.relative_to(REPO).as_posix() for path in PACKAGE.rglob("*.py")
             if "argparse" in imported_names(path) and "cli" not in path.relative_to(PACKAGE).parts]
    assert sorted(set(users) - STANDALONE_SCRIPTS) == [], f"argparse outside tunelab/cli/: {users}"
    for script in STANDALONE_SCRIPTS:
        assert not imported_modules(REPO / script), f"{script} is standalone: it imports tunelab"


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_templates_are_known_data_files():
    templates = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.j2")}
    known = {path for paths in DATA_FILES.values() for path in paths}
    # sweep.html.j2 is read by `tunelab sweep-report`, and tunelab/ui/templates/ by
    # `tunelab ui`: no stage runs either.
    ui_pages = {path for path in templates if path.startswith("tunelab/ui/templates/")}
    assert templates - known - ui_pages == {"tunelab/report/templates/sweep.html.j2"}
    assert ui_pages, "tunelab/ui/templates/ holds the pages of `tunelab ui`"
