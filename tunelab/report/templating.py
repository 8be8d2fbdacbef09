"""The one jinja2 environment behind tunelab's HTML pages (run report, sweep report).

Both pages embed untrusted text (model samples, experiment names and params), so
escaping is always on; a misspelt variable fails the render instead of printing
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jinja2

TEMPLATES_DIR = Path(__file__).parent / "templates"


def environment(filters: dict[str, Callable] | None = None) -> jinja2.Environment:
    """A jinja2 Environment over tunelab/report/templates/ with ``filters`` added."""
    # autoescape=True, not select_autoescape: the templates end in .j2, which
    # select_autoescape would not recognise.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(filters or {})
    return env
