"""`tunelab serve`: the OpenAI-compatible HTTP API (tunelab.serve.server)."""

from __future__ import annotations

from pathlib import Path

from tunelab.cli.arg_types import adapter_spec, positive_int
from tunelab.cli.extras import require_extra
from tunelab.serve import server


def register(commands) -> None:
    serve = commands.add_parser("serve", help="OpenAI-compatible HTTP API for the base model "
                                "and its adapters")
    serve.add_argument("--base", default=server.DEFAULT_BASE, type=Path,
                       help="base model folder (default: models/base)")
    serve.add_argument("--base-name", default="base",
                       help="the `model` name that selects the base without adapters")
    serve.add_argument("--adapter", action="append", default=[], type=adapter_spec,
                       metavar="NAME=DIR", help="a LoRA adapter folder served as NAME (repeat)")
    serve.add_argument("--host", default=server.DEFAULT_HOST,
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=server.DEFAULT_PORT)
    serve.add_argument("--api-key", default=None,
                       help=f"require 'Authorization: Bearer KEY' (default: ${server.API_KEY_ENV}; "
                       "the environment keeps it out of `ps`)")
    serve.add_argument("--max-tokens-limit", type=positive_int,
                       default=server.DEFAULT_MAX_TOKENS_LIMIT,
                       help="largest max_tokens a request may ask for; also the default")
    serve.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads for generation (default: torch's choice); "
                       "1 avoids stalls when other jobs share the cores")
    serve.set_defaults(handler=serve_models)


def serve_models(args) -> int:
    require_extra("serve")
    return server.serve(args.base, args.adapter, base_name=args.base_name, host=args.host,
                        port=args.port, api_key=args.api_key,
                        max_tokens_limit=args.max_tokens_limit, threads=args.threads)
