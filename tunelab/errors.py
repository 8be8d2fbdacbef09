"""The errors a user can fix. Each message is one line naming the file and line (or
params key) and the reason; the CLI and every stage print it without a traceback
(``USER_ERRORS``). This module imports nothing from tunelab, so every layer may use it."""


class DataError(ValueError):
    """Bad user input; the message is one line naming where and why."""


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and the reason."""


class ModelSourceError(ValueError):
    """``model.base`` names nothing loadable; the message says what to do."""


class AdapterError(ModelSourceError):
    """Adapters or models that cannot be merged, exported or ensembled as asked
    (tunelab.adapters' MergeError, ExportError and EnsembleError)."""


class DeployError(ModelSourceError):
    """A GGUF export, a GGUF file or a parity check that fails (tunelab.deploy); the
    message names the file or params key."""


class JudgeError(RuntimeError):
    """The judge stage's model cannot answer: an endpoint that is down, refuses the key or
    the request, or a prompt too long for it (tunelab.judge); the message names it."""


class TrainingError(RuntimeError):
    """Training stopped for a reason the user can fix; the message is one line."""


class MissingExtraError(RuntimeError):
    """A command needs an optional extra (pyproject.toml's optional-dependencies) that is
    not installed; the message says what to pip install."""


USER_ERRORS = (DataError, ParamsError, ModelSourceError, TrainingError, JudgeError,
               MissingExtraError)
