"""Build-time validation shared by the step-rule builders (outside jit, ``ValueError``/``TypeError``)."""

from __future__ import annotations

import math
from typing import Any

import jax

__all__: list[str] = []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def concrete_float(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                   lo_open: bool = False, allow_inf: bool = False, allow_traced: bool = False) -> Any:
    """Check a scalar hyper-parameter lies in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``).

    Traced values pass through unchecked when ``allow_traced`` (they only enter arithmetic);
    otherwise they raise, because the value decides the rule's structure.
    """
    if isinstance(value, jax.core.Tracer):
        if allow_traced:
            return value
        raise ValueError(f"{name} must be a concrete Python number (it fixes the rule's structure), got a tracer")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real scalar, got {value!r}") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")
    return v


def check_int(name: str, value: Any, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be a Python int >= {lo}, got {value!r}")
    return value


def check_sde(sde: Any, *, scalar: bool) -> None:
    """The generic SDE interface (``reverse_drift``, ``diffusion_apply``, ``prior_sample``, ``T``);
    ``scalar`` rules additionally need ``marginal_coeffs`` and ``log_snr``."""
    needed = ["reverse_drift", "diffusion_apply", "prior_sample", "T"]
    if scalar:
        needed += ["marginal_coeffs", "log_snr", "diffusion_sq"]
    missing = [n for n in needed if not hasattr(sde, n)]
    if missing:
        kind = "a scalar SDE (VPSDE, SubVPSDE, VESDE)" if scalar else "an SDE"
        raise TypeError(f"sde must be {kind}; {type(sde).__name__} lacks {', '.join(missing)}")
