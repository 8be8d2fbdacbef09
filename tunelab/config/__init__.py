"""tunelab.config: the schemas of everything a user writes to steer tunelab, as pydantic
v2 models that hold the only copy of each default and allowed range: params.yaml's
sections (``params``), multitask/params.yaml's task list (``multitask``) and sweep files
(``sweep_file``), plus the shared field types and the translation of a validation error
into one line naming the file, the key and the reason (``schema``). It also writes them:
params.yaml edited in place with its comments kept (``params_edit``), and other tools'
configs read into params.yaml or a sweep file (``import_config``, `tunelab import-config`,
with one key table per tool: ``from_axolotl``, ``from_llamafactory``, ``from_guide``, built
from ``key_maps``), and docs/params.md generated from the schema and params.yaml's
comments (``params_reference``, run by the docs site's hook). It may import only
tunelab.chat (the family names), tunelab.util and tunelab.errors, so every other layer
can read config."""
