"""User-facing errors of the ``diffjax`` command: one line on stderr, exit status 2, no traceback.

:class:`CliError` is raised by the subcommands; :func:`error_line` turns the other expected
failures (a missing optional extra, a checkpoint or file that cannot be read or written) into the
one line that names the fix or the path.
"""

from __future__ import annotations

import json

__all__ = ["CliError", "checkpoint_error_type", "error_line", "read_error", "check_flag"]

# module name (as in ImportError.name or its message) -> the setup.cfg extra that installs it
_EXTRAS = {"tensorflow_datasets": "data", "tensorflow-datasets": "data", "tensorflow": "data",
           "sklearn": "data", "scikit-learn": "data", "dp_accounting": "privacy", "dp-accounting": "privacy",
           "torch": "bench", "diffrax": "bench"}


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def checkpoint_error_type() -> type:
    """``diffjax.train.CheckpointError`` (corrupt/edited/missing checkpoint), or a never-raised stand-in."""
    from diffjax import train

    return getattr(train, "CheckpointError", _NoCheckpointError)


class _NoCheckpointError(Exception):
    """Stand-in while ``diffjax.train`` has no ``CheckpointError``."""


def _missing_extra(e: ImportError) -> str | None:
    chain, seen = [], e
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for err in chain:
        words = [getattr(err, "name", None) or ""] + str(err).replace("'", " ").replace("`", " ").split()
        for w in words:
            extra = _EXTRAS.get(w.strip(".,:()[]").split(".")[0])
            if extra:
                return extra
    return None


def error_line(e: BaseException) -> str | None:
    """The one-line message for an expected failure, or ``None`` for a bug (let it raise)."""
    if isinstance(e, CliError):
        return str(e)
    if isinstance(e, ImportError):
        extra = _missing_extra(e)
        hint = f"pip install -e '.[{extra}]'" if extra else "pip install -e '.[data,privacy]'"
        return f"a missing optional dependency ({e.name or str(e).splitlines()[0]}): run {hint}"
    if isinstance(e, checkpoint_error_type()):
        return str(e)
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON: {e}"
    if isinstance(e, OSError):
        where = e.filename if e.filename is not None else ""
        return f"cannot read or write {where}: {e.strerror or e}" if where else str(e)
    return None


def read_error(path, e: BaseException) -> CliError:
    """A :class:`CliError` naming ``path`` for any failure to read a checkpoint (one line)."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    if isinstance(e, checkpoint_error_type()) or str(path) in first:
        return CliError(first)
    return CliError(f"cannot read checkpoint {path}: {type(e).__name__}: {first}")


def check_flag(name: str, value, *, lo: float | None = 0.0, lo_open: bool = True, hi: float | None = None) -> None:
    """Raise :class:`CliError` naming ``--name`` unless ``value`` is finite and in range (``None`` passes)."""
    from diffjax._validate import concrete_float

    if value is None:
        return
    try:
        concrete_float(f"--{name.replace('_', '-')}", value, lo=lo, hi=hi, lo_open=lo_open)
    except ValueError as e:
        raise CliError(str(e)) from None
