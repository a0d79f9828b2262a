"""Differentially private training (DP-SGD) with Opacus, three accountants, an independent
cross-check, and checks measured on the real optimiser (chapter 02).

* :mod:`~pets_lite.dp.accounting`: budget checks, the noise a budget needs, the ε a run spent
  (Opacus' RDP, PRV, GDP beside Google's ``dp-accounting``), the bound on any attacker's advantage;
* :mod:`~pets_lite.dp.readiness`: models DP-SGD can train (``make_dp_ready``) and the clipping
  engine for each (book-keeping, :mod:`pets_lite.clipping`, else Opacus');
* :mod:`~pets_lite.dp.training`: the chapter's recipe, :func:`private_training` (one set-up of
  DP-SGD), :func:`train_dp`, the cached models of the book (:func:`dp_model`) and the sweep;
* :mod:`~pets_lite.dp.checks`: the noise, clipping and Poisson sampling of a real step, measured;
* :mod:`~pets_lite.dp.anatomy`: one step taken apart, for the chapter's figures;
* :mod:`~pets_lite.dp.overhead`: what each engine costs per epoch;
* :mod:`~pets_lite.dp.figures`: the chapter's figures.

The names below are the package's public interface (``from pets_lite import dp; dp.train_dp``).
"""

from .accounting import (
    DELTA,
    EPSILONS,
    DPConfigError,
    advantage_bound,
    check_budget,
    check_clip,
    classic_rdp_epsilon,
    dp_accounting_epsilon,
    epsilon_report,
    noise_multiplier_for,
    opacus_epsilon,
    sampling,
    what_epsilon_means,
)
from .anatomy import anatomy_table, clip_each, dp_sgd_step_anatomy, per_sample_grads
from .checks import noise_check, optimizer_gradient, sampling_check
from .figures import attack_figure, cost_figure, curve_figure, norms_figure
from .overhead import OVERHEAD_MODES, epoch_seconds, overhead, overhead_summary
from .readiness import (
    GRAD_SAMPLE_MODES,
    OutOfPlace,
    batchnorm_layers,
    check_model,
    grad_sample_mode_for,
    make_dp_ready,
    resolve_mode,
)
from .training import (
    DP_RECIPE,
    DPRecipe,
    DPResult,
    PrivateTraining,
    dp_cnn,
    dp_model,
    make_private,
    privacy_utility_curve,
    private_training,
    sweep,
    train_dp,
)

__all__ = [
    "DELTA", "EPSILONS", "DPConfigError", "advantage_bound", "check_budget", "what_epsilon_means",
    "check_clip", "classic_rdp_epsilon", "dp_accounting_epsilon", "epsilon_report",
    "noise_multiplier_for", "opacus_epsilon", "sampling", "GRAD_SAMPLE_MODES", "OutOfPlace",
    "batchnorm_layers", "check_model", "grad_sample_mode_for", "make_dp_ready", "resolve_mode",
    "DP_RECIPE", "DPRecipe", "DPResult", "PrivateTraining", "dp_cnn", "dp_model", "make_private",
    "private_training", "privacy_utility_curve", "sweep", "train_dp", "anatomy_table",
    "clip_each", "dp_sgd_step_anatomy", "per_sample_grads", "noise_check", "optimizer_gradient",
    "sampling_check", "attack_figure", "cost_figure", "curve_figure", "norms_figure",
    "OVERHEAD_MODES", "epoch_seconds", "overhead", "overhead_summary",
]
