"""The `tunelab ui` app: the pages' routers, who may use them, and what a failure shows.

Access follows `tunelab serve`'s rules (tunelab.serve.server): bound to 127.0.0.1 by
default; bound anywhere else it needs an API key ($TUNELAB_API_KEY or --api-key), unless
--allow-no-key. With a key, a browser signs in once on /login (the key is checked, and
an HttpOnly cookie holding an HMAC of it, never the key, keeps it signed in); a script
may send 'Authorization: Bearer KEY' instead, as to `tunelab serve`. Whatever the binding,
a request from another site is refused: a form POST whose Origin is not this server's
(a web page cannot make your browser launch runs here), and, on a loopback binding, a
Host header that is not a loopback name (DNS rebinding). Bodies are capped as
`tunelab serve` caps them (tunelab.serve.body_limit).

Every error a user can cause is a page with one line saying what to do: 400 for bad
input, 401/403 for access, 404 for an unknown run, model or page; anything else is a 500
page that names no internals (the traceback goes to the server's log).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.

import contextlib
import hashlib
import hmac
import logging
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

from tunelab.errors import USER_ERRORS
from tunelab.serve import server
from tunelab.serve.body_limit import BodyLimit
from tunelab.ui import compare, data_pages, launch, playground, registry_pages, runs
from tunelab.ui.pages import PageError, form_fields, one, render

DEFAULT_HOST = server.DEFAULT_HOST
DEFAULT_PORT = 8765  # the CLI repeats it (tunelab.cli.ui) so `tunelab --help` loads no FastAPI
MAX_BODY_BYTES = 256 * 1024  # the largest form here (a launch, a chat message) is a few KB
SESSION_COOKIE = "tunelab_ui_session"
OPEN_PATHS = ("/login",)     # reachable without signing in
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
HEADINGS = {400: "Cannot do that", 401: "Sign in first", 403: "Refused", 404: "Not found",
            405: "Not allowed", 413: "Too large", 500: "Something went wrong"}

log = logging.getLogger("tunelab.ui")


def create_app(root: Path, api_key: str | None = None, host: str = DEFAULT_HOST) -> FastAPI:
    """The app serving the repo at ``root``; ``api_key`` required when given. ``root`` is
    the working directory, as for every tunelab command (`tunelab ui` serves the repo it is
    started in): params.yaml's paths, such as prepare.raw_dir, are relative to it."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.models.close()  # the playground's models, if it loaded any

    app = FastAPI(title="tunelab ui", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.root = Path(root).resolve()
    app.state.api_key = api_key
    app.state.models = playground.LoadedModels()
    loopback_only = server.is_loopback(host)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # inside the access check

    @app.middleware("http")
    async def check_access(request: Request, call_next):
        refusal = foreign_request(request, loopback_only)
        if refusal:
            return error_page(request, 403, refusal)
        if api_key and request.url.path not in OPEN_PATHS and not signed_in(request, api_key):
            if request.method == "GET":
                return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
            return error_page(request, 401, "this lab needs its API key: sign in on /login")
        return await call_next(request)

    @app.exception_handler(PageError)
    async def page_error(request: Request, err: PageError):
        return error_page(request, err.status, err.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        if err.status_code == 404:
            return error_page(request, 404, f"no page {request.url.path}: the pages are listed "
                              "at the top")
        return error_page(request, err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return error_page(request, 400, f"{where}: {first.get('msg', 'invalid value')}")

    async def user_error(request: Request, err: Exception):
        return error_page(request, 400, str(err))

    for kind in USER_ERRORS:  # RepoError, DataError, ParamsError ...: the user can fix them
        app.add_exception_handler(kind, user_error)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_page(request, 500, "internal error; the server's log has the details")

    @app.get("/")
    def home():
        return RedirectResponse("/runs", 303)

    @app.get("/login")
    def login_page(request: Request, next: str = "/runs"):
        return render(request, "login.html.j2", title="Sign in", next=safe_next(next), error="")

    @app.post("/login")
    async def login(request: Request):
        fields = await form_fields(request)
        given, target = one(fields, "key", ""), safe_next(one(fields, "next", "/runs"))
        if not api_key or not hmac.compare_digest(given.encode(), api_key.encode()):
            return render(request, "login.html.j2", 401, title="Sign in", next=target,
                          error="that is not this lab's API key")
        response = RedirectResponse(target, 303)
        response.set_cookie(SESSION_COOKIE, session_token(api_key), httponly=True,
                            samesite="strict")
        return response

    for module in (runs, compare, launch, playground, registry_pages, data_pages):
        app.include_router(module.router)

    return app


def error_page(request: Request, status: int, message: str):
    return render(request, "error.html.j2", status, title=HEADINGS.get(status, "Error"),
                  heading=HEADINGS.get(status, "Error"), message=message, code=status)


def session_token(api_key: str) -> str:
    """What the sign-in cookie holds: an HMAC of the key, so the cookie never holds the key."""
    return hmac.new(api_key.encode(), b"tunelab ui session", hashlib.sha256).hexdigest()


def signed_in(request: Request, api_key: str) -> bool:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return server.key_matches(request, api_key) or hmac.compare_digest(
        cookie.encode(), session_token(api_key).encode())


def foreign_request(request: Request, loopback_only: bool) -> str | None:
    """Why a request must be refused as coming from another site; None when it may go on."""
    host = request.headers.get("host", "")
    if loopback_only and urlsplit(f"//{host}").hostname not in LOOPBACK_NAMES:
        return (f"Host {host!r}: this lab listens on this machine only; open it as "
                "http://127.0.0.1:PORT/")
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            return f"a form sent from {origin}, another site: only this lab's own pages may"
        if request.headers.get("sec-fetch-site") == "cross-site":
            return "a form sent from another site: only this lab's own pages may"
    return None


def safe_next(target: str) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    return target if target.startswith("/") and not target.startswith("//") else "/runs"


def serve(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          api_key: str | None = None) -> int:
    """Serve the lab until stopped (Ctrl+C)."""
    import uvicorn

    app = create_app(root, api_key, host)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"tunelab ui: http://{shown}:{port}/ for {app.state.root}"
          + (" (API key required: sign in with it)" if api_key else ""), file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
