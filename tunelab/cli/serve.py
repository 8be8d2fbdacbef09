"""`tunelab serve`: the OpenAI-compatible HTTP API (tunelab.serve.server)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tunelab.cli.arg_types import adapter_spec, gguf_spec, positive_int
from tunelab.cli.extras import require_extra
from tunelab.deploy.llama_runtime import DEFAULT_CONTEXT
from tunelab.errors import ModelSourceError
from tunelab.experiments import registry
from tunelab.serve import server


def register(commands) -> None:
    serve = commands.add_parser("serve", help="OpenAI-compatible HTTP API for the base model "
                                "and its adapters, or for GGUF files (llama.cpp)")
    serve.add_argument("--base", default=None, type=Path,
                       help=f"base model folder (default: {server.DEFAULT_BASE})")
    serve.add_argument("--base-name", default="base",
                       help="the `model` name that selects the base without adapters")
    serve.add_argument("--adapter", action="append", default=[], type=adapter_spec,
                       metavar="NAME=DIR", help="a LoRA adapter folder served as NAME (repeat)")
    serve.add_argument("--gguf", action="append", default=[], type=gguf_spec,
                       metavar="NAME=FILE", help="a GGUF file served as NAME with llama.cpp "
                       "(repeat); instead of --base and --adapter")
    serve.add_argument("--artifact", default=None, metavar="NAME@STAGE|NAME@vX.Y.Z",
                       help="serve a registered version (gto show lists them), fetched through "
                       "DVC, e.g. ticket-triage-adapter@prod; instead of --base/--adapter/--gguf")
    serve.add_argument("--context", type=positive_int, default=None,
                       help=f"with --gguf: llama.cpp KV-cache tokens per model, the longest "
                       f"prompt plus answer (default {DEFAULT_CONTEXT})")
    serve.add_argument("--host", default=server.DEFAULT_HOST,
                       help="address to bind (default 127.0.0.1: this machine only; any other "
                       "needs an API key or --allow-no-key)")
    serve.add_argument("--port", type=int, default=server.DEFAULT_PORT)
    serve.add_argument("--api-key", default=None,
                       help=f"require 'Authorization: Bearer KEY' (default: ${server.API_KEY_ENV}; "
                       "the environment keeps it out of `ps`)")
    serve.add_argument("--allow-no-key", action="store_true",
                       help="serve on a --host other machines can reach without an API key: "
                       "anyone who reaches the port can use the model")
    serve.add_argument("--max-tokens-limit", type=positive_int,
                       default=server.DEFAULT_MAX_TOKENS_LIMIT,
                       help="largest max_tokens a request may ask for; also the default")
    serve.add_argument("--threads", type=positive_int, default=None,
                       help="CPU threads for generation: torch's (default: torch's choice; 1 "
                       "avoids stalls when other jobs share the cores), or with --gguf each "
                       "model's llama.cpp threads (default: all cores)")
    serve.set_defaults(handler=serve_models)


def serve_models(args) -> int:
    require_extra("serve")
    # Refused before a model loads or an artifact is fetched.
    refusal = server.binding_refusal(args.host, server.resolve_api_key(args.api_key),
                                     args.allow_no_key)
    if refusal:
        print(f"tunelab serve: error: {refusal}", file=sys.stderr)
        return 2
    if args.artifact:
        return serve_artifact(args)
    if args.gguf:
        require_extra("gguf")
    return server.serve(args.base, args.adapter, base_name=args.base_name, host=args.host,
                        port=args.port, api_key=args.api_key,
                        max_tokens_limit=args.max_tokens_limit, threads=args.threads,
                        gguf=args.gguf, context=args.context)


def serve_artifact(args) -> int:
    """The registered version's files, fetched into a temporary folder for as long as the
    server runs (DVC links or copies them from the cache)."""
    if args.base or args.adapter or args.gguf:
        raise ModelSourceError("--artifact serves one registered version: leave out --base, "
                         "--adapter and --gguf")
    with tempfile.TemporaryDirectory(prefix="tunelab-artifact-") as folder:
        found = registry.fetch_for_serving(Path.cwd(), args.artifact, folder)
        version = found.version
        print(f"{version.name} {version.version}"
              + (f" (stage {version.stage})" if version.stage else "")
              + f": commit {version.commit[:12]}, {version.path}", file=sys.stderr)
        if found.gguf:
            require_extra("gguf")
        base_name = version.name if found.base and not found.adapters else args.base_name
        return server.serve(found.base, found.adapters, base_name=base_name, host=args.host,
                            port=args.port, api_key=args.api_key,
                            max_tokens_limit=args.max_tokens_limit, threads=args.threads,
                            gguf=found.gguf, context=args.context)
