"""mkdocs hook: docs/params.md is rewritten from params.yaml and the schema before every
build (tunelab.config.params_reference), so the site's params reference cannot drift from
them; the rewritten page is the one to commit (tests/test_docs.py checks it is current)."""

import logging
from pathlib import Path

from tunelab.config import params_reference

log = logging.getLogger("mkdocs.hooks.params_reference")


def on_pre_build(config, **kwargs):
    repo = Path(config.config_file_path).parent
    page = Path(config.docs_dir) / "params.md"
    if params_reference.write(repo / "params.yaml", page):
        log.info("%s rewritten from params.yaml and tunelab/config/params.py", page.name)
