"""Budgets and accountants: input checks, the noise a budget needs, the ε a run spent, the bound on
an attacker's advantage.

Each DP-SGD step is a Poisson-subsampled Gaussian mechanism; an accountant composes the steps into
one ``(epsilon, delta)``. Opacus offers RDP, PRV and GDP; Google's ``dp-accounting`` (RDP and PLD),
written independently of Opacus, is the cross-check.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

#: The chapter's delta: below 1/N for every MedMNIST training split the companion uses.
DELTA = 1e-5
#: The privacy budgets of the privacy-utility curve.
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)


class DPConfigError(ValueError):
    """A privacy or training setting that DP-SGD cannot honour; the message says what to change."""


def check_budget(epsilon: float | None, delta: float, n: int | None = None) -> None:
    """Raise :class:`DPConfigError` on ε ≤ 0 or δ outside (0, 1); warn when δ > 1/N.

    >>> check_budget(8.0, 1e-5, n=4708)
    """
    if epsilon is not None and not (isinstance(epsilon, (int, float)) and epsilon > 0
                                    and math.isfinite(epsilon)):
        raise DPConfigError(f"epsilon must be a finite number > 0, got {epsilon!r}; smaller "
                            "epsilon means more privacy (try 1 to 8), and epsilon=inf is not DP "
                            "at all: train without DP instead.")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise DPConfigError(f"delta must lie strictly between 0 and 1, got {delta!r}; use a value "
                            "well below 1/N, such as 1e-5.")
    if n is not None and delta > 1.0 / n:
        warnings.warn(
            f"delta={delta:g} is larger than 1/N = {1.0 / n:.2g} (N={n} training examples): a "
            "mechanism that publishes one whole random record satisfies (0, 1/N)-DP, so a delta "
            "this large permits leaking a record outright. Choose delta < 1/N (e.g. 1e-5).",
            UserWarning, stacklevel=2)


def check_clip(max_grad_norm: float) -> None:
    """Raise :class:`DPConfigError` unless the per-sample clipping norm is a finite number > 0."""
    if not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0
            and math.isfinite(max_grad_norm)):
        raise DPConfigError(f"max_grad_norm (the per-sample clipping norm C) must be a finite "
                            f"number > 0, got {max_grad_norm!r}; 1.0 is a good start.")


def sampling(n: int, batch_size: int, epochs: int = 1) -> tuple[float, int]:
    """``(sample rate q, steps)`` of DP-SGD on ``n`` examples at expected batch ``batch_size``:
    q = 1 / ceil(n / batch_size), as Opacus' Poisson loader sets it, and ceil(n / batch_size)
    steps per epoch. The expected batch size is q n.

    >>> sampling(1200, 64, 5)
    (0.05263157894736842, 95)
    """
    if n < 1 or not 1 <= batch_size <= n or epochs < 1:
        raise DPConfigError(f"need epochs >= 1 and 1 <= batch_size <= N={n}, got epochs={epochs}, "
                            f"batch_size={batch_size}")
    per_epoch = math.ceil(n / batch_size)
    return 1 / per_epoch, epochs * per_epoch


def noise_multiplier_for(epsilon: float, delta: float, sample_rate: float, steps: int,
                         accountant: str = "rdp", tolerance: float = 0.01) -> float:
    """The smallest noise multiplier σ (to ``tolerance`` in ε) that keeps ``steps``
    Poisson-subsampled Gaussian steps at rate ``sample_rate`` within ``(epsilon, delta)``."""
    from opacus.accountants.utils import get_noise_multiplier

    check_budget(epsilon, delta)
    if not 0 < sample_rate <= 1 or steps < 1:
        raise DPConfigError(f"need 0 < sample_rate <= 1 and steps >= 1, got {sample_rate}, {steps}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps,
                                          accountant=accountant, epsilon_tolerance=tolerance))


def opacus_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                   accountant: str = "rdp", orders=None) -> float:
    """ε spent after ``steps`` steps, from one of Opacus' accountants (``rdp``, ``prv``, ``gdp``);
    ``orders`` replaces the RDP accountant's default orders."""
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    kwargs = {"alphas": list(orders)} if orders is not None and accountant == "rdp" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDP warns that it is experimental: we say so in the text
        return float(acc.get_epsilon(delta=delta, **kwargs))


def dp_accounting_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                          method: str = "rdp", orders=None) -> float:
    """ε from Google's ``dp-accounting`` (``rdp`` or ``pld``): the independent cross-check.

    RDP uses Opacus' default orders unless ``orders`` is given. At fractional orders where its
    series does not converge (large sampling rate, small σ) dp-accounting drops the order, so its
    ε can then sit slightly above Opacus'; on integer orders the two agree to rounding.
    """
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate,
                                            dp_accounting.GaussianDpEvent(noise_multiplier)),
        int(steps))
    if method == "rdp":
        from opacus.accountants import RDPAccountant

        acc = dp_accounting.rdp.RdpAccountant(list(orders if orders is not None
                                                   else RDPAccountant.DEFAULT_ALPHAS))
    elif method == "pld":
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    else:
        raise ValueError(f"method must be 'rdp' or 'pld', got {method!r}")
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # dp-accounting logs each RDP order it drops
    try:
        acc.compose(event)
        return float(acc.get_epsilon(delta))
    finally:
        absl_logging.set_verbosity(level)


def epsilon_report(noise_multiplier: float, sample_rate: float, steps: int,
                   delta: float = DELTA, crosscheck: bool = True) -> dict[str, float]:
    """ε for one DP-SGD run from Opacus' RDP, PRV and GDP and (``crosscheck``) dp-accounting's
    RDP and PLD.

    >>> r = epsilon_report(1.1, 256 / 60000, 14062, 1e-5, crosscheck=False)
    >>> 2.5 < r["rdp"] < 2.7
    True
    """
    report = {name: opacus_epsilon(noise_multiplier, sample_rate, steps, delta, name)
              for name in ("rdp", "prv", "gdp")}
    if crosscheck:
        for method in ("rdp", "pld"):
            report[f"dp_accounting_{method}"] = dp_accounting_epsilon(
                noise_multiplier, sample_rate, steps, delta, method)
    return report


def classic_rdp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                        orders=None) -> float:
    """ε from RDP with the *original* conversion ε = min_α RDP(α) + log(1/δ)/(α-1) (Mironov 2017),
    which Opacus used before it switched to the tighter conversion of Balle et al. (2020)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    orders = np.asarray(orders if orders is not None else RDPAccountant.DEFAULT_ALPHAS, dtype=float)
    rdp = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps,
                                   orders=orders)
    return float(np.min(rdp + np.log(1 / delta) / (orders - 1)))


def advantage_bound(epsilon: float, delta: float = DELTA) -> float:
    """The largest membership advantage TPR - FPR that any attack can have against an
    ``(epsilon, delta)``-DP mechanism: (e^ε - 1 + 2δ) / (e^ε + 1) (Kairouz et al. 2015), capped
    at 1; 1 for ε = inf (no guarantee).

    >>> round(advantage_bound(1.0, 0.0), 3), round(advantage_bound(8.0), 4)
    (0.462, 0.9993)
    """
    if epsilon < 0 or not 0 <= delta < 1:
        raise DPConfigError(f"need epsilon >= 0 and 0 <= delta < 1, got {epsilon}, {delta}")
    if math.isinf(epsilon):
        return 1.0
    return min(1.0, (math.expm1(epsilon) + 2 * delta) / (math.exp(epsilon) + 1))


def what_epsilon_means(epsilon: float, delta: float = DELTA) -> str:
    """One sentence on what an ``(epsilon, delta)`` guarantee of DP-SGD bounds, for a table.

    >>> what_epsilon_means(1.0)[-47:]
    'membership test has advantage TPR - FPR ≤ 0.462'
    """
    bound = advantage_bound(epsilon, delta)
    note = " (no meaningful bound)" if bound > 0.99 else ""
    return (f"ε = {epsilon:.2f}, δ = {delta:g} per image (one image added or removed): for any "
            f"image, any membership test has advantage TPR - FPR ≤ {bound:.3f}{note}")
