"""`tunelab ui`: the lab in a browser (tunelab.ui), for the repo in the current folder."""

from __future__ import annotations

import sys
from pathlib import Path

from tunelab.cli.arg_types import positive_int
from tunelab.cli.extras import require_extra
from tunelab.errors import DataError
from tunelab.serve import server

DEFAULT_PORT = 8765  # tunelab.ui.app.DEFAULT_PORT, here so `tunelab --help` imports no FastAPI


def register(commands) -> None:
    ui = commands.add_parser("ui", help="the lab in a browser: runs, compare, launch, "
                             "playground, registry and data pages (a local web app)")
    ui.add_argument("--host", default=server.DEFAULT_HOST,
                    help="address to bind (default 127.0.0.1: this machine only; any other "
                    "needs an API key or --allow-no-key, as `tunelab serve` does)")
    ui.add_argument("--port", type=positive_int, default=DEFAULT_PORT,
                    help=f"default {DEFAULT_PORT}")
    ui.add_argument("--api-key", default=None,
                    help=f"require this key: a browser signs in with it once (default: "
                    f"${server.API_KEY_ENV}; the environment keeps it out of `ps`)")
    ui.add_argument("--allow-no-key", action="store_true",
                    help="listen on a --host other machines can reach without an API key: "
                    "anyone who reaches the port can launch runs and promote models")
    ui.set_defaults(handler=run_ui)


def run_ui(args) -> int:
    require_extra("serve")  # FastAPI and uvicorn
    api_key = server.resolve_api_key(args.api_key)
    refusal = server.binding_refusal(args.host, api_key, args.allow_no_key,
                                     served="the lab (launch runs, promote models)")
    if refusal:  # before anything loads
        print(f"tunelab ui: error: {refusal}", file=sys.stderr)
        return 2
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise DataError(f"{root}: no dvc.yaml here: run `tunelab ui` in a tunelab repo")
    from tunelab.ui import app

    return app.serve(root, args.host, args.port, api_key)
