"""The optional extras of pyproject.toml that some commands need, checked in their
handlers so a missing one is one line (``tunelab CMD: error: ...``), not a traceback."""

from __future__ import annotations

import importlib

from tunelab.errors import MissingExtraError

# extra -> the modules it installs that the commands import
EXTRAS = {"serve": ("fastapi", "uvicorn"), "bench": ("httpx", "openai"), "gguf": ("llama_cpp",)}


def require_extra(extra: str) -> None:
    """Raise MissingExtraError unless every module of ``extra`` can be imported."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # installed, but broken: the real error says more
                raise
            raise MissingExtraError(f'the {extra} extra is not installed: '
                                    f'pip install "tunelab[{extra}]"') from None
