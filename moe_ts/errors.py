"""Which exceptions are the user's to fix (reported by the `moe-ts` command in one line) and how to word them.

Our own error types (any class defined in this repository's packages: CheckpointError, ModelFolderError, CorpusError,
ConfigError, DataFormatError, OutputDirError, ...) and file / format errors from the libraries (OSError,
ValueError, KeyError, UnicodeError) are the user's; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

OUR_PACKAGES = ("kernels", "moe_ts", "data_prep", "pretrain", "eval", "finetune", "distill", "cli")  # every top-level package
USER_ERROR_TYPES: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, UnicodeError)


def is_user_error(err: BaseException) -> bool:
    """True for our own error types and file / format errors."""
    ours = any(cls.__module__.split(".")[0] in OUR_PACKAGES for cls in type(err).__mro__)
    return ours or isinstance(err, USER_ERROR_TYPES)


def one_line_error(err: BaseException) -> str:
    """The error's message on one line (KeyError's quotes removed; a file error names its file)."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.filename and str(err.filename) not in str(err):
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__
