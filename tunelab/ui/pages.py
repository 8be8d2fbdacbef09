"""What every page of `tunelab ui` shares: the jinja2 templates (tunelab/ui/templates/),
the error a handler raises to show a message page, and reading a submitted form.

Templates are rendered with escaping always on (run names, params, model answers and
data examples are untrusted text) and StrictUndefined (a misspelt variable fails the
render instead of printing nothing), as tunelab.report's pages are.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from urllib.parse import parse_qs

import jinja2

TEMPLATES_DIR = Path(__file__).parent / "templates"

# The pages in the navigation bar, in order: (path, title).
NAVIGATION = (("/runs", "Runs"), ("/compare", "Compare"), ("/launch", "Launch"),
              ("/playground", "Playground"), ("/registry", "Registry"), ("/data", "Data"))


class PageError(Exception):
    """A request the page cannot serve: shown as a page with ``message`` and ``status``
    (400 for bad input, 404 for an unknown run, model or page)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def number(value, digits: int = 4) -> str:
    """A metric or param for a table cell: floats to ``digits`` significant digits."""
    if isinstance(value, bool):
        return "true" if value else "false"  # as params.yaml writes it
    if not isinstance(value, float):
        return "" if value is None else str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def png_data_uri(png: bytes) -> str:
    """A PNG as a data: URL, for an <img> that needs no second request (the plots pages draw)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["number"] = number
    env.filters["signed"] = lambda value: f"{value:+.4g}"
    return env


ENVIRONMENT = _environment()


def render(request, template: str, status: int = 200, **context):
    """The HTML response of ``template`` with ``context``, inside the common layout."""
    from fastapi.responses import HTMLResponse

    page = ENVIRONMENT.get_template(template).render(
        navigation=NAVIGATION, path=request.url.path,
        login_required=bool(getattr(request.app.state, "api_key", None)), **context)
    return HTMLResponse(page, status_code=status)


async def form_fields(request) -> dict[str, list[str]]:
    """The fields of a submitted form (application/x-www-form-urlencoded), each a list of
    its values. Parsed here with the standard library: FastAPI's Form() would need the
    python-multipart package for what is one line of urllib."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        raise PageError(400, f"send the form as application/x-www-form-urlencoded, not "
                        f"{content_type or 'no content type'}")
    body = await request.body()
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise PageError(400, "the form is not UTF-8 text") from None


def one(fields: dict[str, list[str]], name: str, default: str | None = None) -> str:
    """The single value of form field ``name``; a 400 page when it is missing."""
    values = fields.get(name)
    if not values:
        if default is not None:
            return default
        raise PageError(400, f"the form has no field {name!r}")
    return values[-1]
