"""Privacy accounting for DP-SGD with Poisson subsampling (thesis §4.3.3, App. 4.4.1).

One DP-SGD release ``G~ = G + (C/B) z`` with ``z ~ N(0, sigma_DP^2 I)`` has L2 sensitivity
``C/B`` (thesis Theorem 4), i.e. it is the Gaussian mechanism with noise multiplier
``sigma_DP``; Poisson sampling at rate ``q`` (Alg. 5) amplifies it, and ``steps`` releases
compose. The thesis computes the total cost with RDP composition "as implemented in Opacus"
(App. 4.4.1): that is ``accountant="rdp"`` here (default), which reproduces Table 4.9 to about
1.5 %. ``accountant="pld"`` (privacy loss distributions) is tighter (about 8-11 % smaller
epsilon in the Table 4.9 setting) and is offered as an option.

The numerics come from Google's ``dp-accounting`` package, imported lazily (optional extra
``pip install diffjax[privacy]``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers

__all__ = ["epsilon", "calibrate_noise", "steps_for_epochs", "ACCOUNTANTS"]

ACCOUNTANTS = ("rdp", "pld")


def _dp_accounting():
    try:
        import dp_accounting  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "privacy accounting needs the optional dependency 'dp-accounting'; install it with "
            "`pip install diffjax[privacy]` (or `pip install dp-accounting`)") from e
    return dp_accounting


@contextlib.contextmanager
def _quiet_absl():
    """Silence dp-accounting's per-order warnings ("_compute_log_a_frac failed to converge ...
    Excluding this order"), dozens per call at large sample rates. Dropping an order only makes the
    RDP epsilon (a minimum over orders) larger, so the result stays a valid upper bound."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_positive(name, value, *, allow_zero=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite "
                         f"number, got {value!r}")
    return float(value)


def _check_common(sample_rate, steps, delta, accountant):
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}")
    q = _check_positive("sample_rate", sample_rate)
    if q > 1:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate!r}")
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    d = _check_positive("delta", delta)
    if d >= 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    return q, int(steps), d


def steps_for_epochs(epochs: float, dataset_size: int, batch_size: int) -> int:
    """Number of DP-SGD steps of ``epochs`` passes at expected batch size ``B``: ``ceil(epochs N / B)``.

    (Opacus truncates ``epochs / q``; rounding up only ever accounts for the step actually run.)

    Raises:
      ValueError: for non-positive arguments or ``batch_size > dataset_size``.
    """
    _check_positive("epochs", epochs)
    for name, v in (("dataset_size", dataset_size), ("batch_size", batch_size)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if batch_size > dataset_size:
        raise ValueError(f"batch_size={batch_size} exceeds dataset_size={dataset_size}")
    return int(math.ceil(epochs * dataset_size / batch_size - 1e-9))


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, *,
            accountant: str = "rdp") -> float:
    """``epsilon`` of ``steps`` Poisson-subsampled Gaussian releases at ``(epsilon, delta)``-DP.

    RDP: the subsampled-Gaussian RDP curve (thesis Theorem 4 / Mironov et al. 2019) over
    dp-accounting's default orders, composed ``steps`` times and converted to ``(eps, delta)``.
    PLD: the privacy-loss-distribution accountant (tighter).

    Args:
      noise_multiplier: ``sigma_DP`` (noise std / clipping norm), ``>= 0``.
      sample_rate: Poisson sampling rate ``q = B / N`` in ``(0, 1]``.
      steps: number of releases.
      delta: target ``delta`` in ``(0, 1)``.
      accountant: ``"rdp"`` (thesis / Opacus, default) or ``"pld"``.

    Returns:
      ``epsilon`` (``0`` for ``steps == 0``; ``inf`` for ``noise_multiplier == 0``).

    Raises:
      ValueError: on invalid arguments.
      ImportError: if ``dp-accounting`` is missing (``pip install diffjax[privacy]``).
    """
    q, steps, delta = _check_common(sample_rate, steps, delta, accountant)
    sigma = _check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    if steps == 0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    dpa = _dp_accounting()
    event = dpa.SelfComposedDpEvent(
        dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)
    acc = dpa.rdp.RdpAccountant() if accountant == "rdp" else dpa.pld.PLDAccountant()
    with _quiet_absl():
        acc.compose(event)
        return float(acc.get_epsilon(delta))


def calibrate_noise(target_epsilon: float, sample_rate: float, steps: int, delta: float, *,
                    accountant: str = "rdp", rtol: float = 1e-3) -> float:
    """Smallest ``sigma_DP`` (to relative ``rtol``) with ``epsilon(sigma_DP, q, steps, delta) <= target``.

    Bracketing from a Gaussian approximation, then bisection in ``log sigma`` until ``hi / lo <= 1 + rtol``; the
    upper end ``hi`` is returned, so the result always satisfies the budget.

    Raises:
      ValueError: on invalid arguments, or if no ``sigma_DP <= 1e6`` reaches the target.
    """
    target = _check_positive("target_epsilon", target_epsilon)
    _check_common(sample_rate, steps, delta, accountant)
    _check_positive("rtol", rtol)
    if steps == 0:
        return 0.0

    def eps(s):
        return epsilon(s, sample_rate, steps, delta, accountant=accountant)

    # Start at the large-composition Gaussian approximation q sqrt(2 T log(1/delta)) / eps and
    # bracket by factors of 1.25 (a few evaluations; each costs ~0.1 s).
    guess = max(sample_rate * math.sqrt(2.0 * steps * math.log(1.0 / delta)) / target, 1e-2)
    lo = hi = guess
    if eps(guess) <= target:
        while True:
            lo = hi / 1.25
            if lo < 1e-3:
                return hi
            if eps(lo) > target:
                break
            hi = lo
    else:
        while True:
            lo, hi = hi, hi * 1.25
            if hi > 1e6:
                raise ValueError(f"target_epsilon={target_epsilon} is unreachable with sigma_DP <= 1e6 "
                                 f"(sample_rate={sample_rate}, steps={steps}, delta={delta})")
            if eps(hi) <= target:
                break
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi
