"""tunelab.config: the schemas of everything a user writes to steer tunelab, as pydantic
v2 models that hold the only copy of each default and allowed range: params.yaml's
sections (``params``), multitask/params.yaml's task list (``multitask``) and sweep files
(``sweep_file``), plus the shared field types and the translation of a validation error
into one line naming the file, the key and the reason (``schema``). It may import only
tunelab.chat (the family names), tunelab.util and tunelab.errors, so every other layer
can read config."""
