"""Differentially private training (DP-SGD) with Opacus, three accountants, and an independent check.

* :func:`train_dp` trains a model with DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise)
  to a target ``(epsilon, delta)`` or with a given noise multiplier, and keeps the best
  validation-AUC epoch (selection on held-out data is post-processing: it costs no privacy of the
  training set).
* :func:`make_dp_ready` makes a network Opacus can train: BatchNorm replaced by GroupNorm
  (``ModuleValidator.fix``) and in-place activations turned off (MONAI builds ``ReLU(inplace=True)``,
  on which Opacus' backward hooks fail).
* :func:`epsilon_report` gives the spent epsilon from Opacus' RDP, PRV and GDP accountants beside
  Google's ``dp-accounting`` (RDP and PLD), an implementation written independently of Opacus.
* :func:`dp_model` returns a DP model of the companion's recipe for ``(epsilon, seed, fast)``, trained
  once and stored in the model cache, so later chapters (07 attacks and audits) reuse it.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import config, train
from .recipes import Recipe, cached_model

#: The chapter's delta: below 1/N for every MedMNIST training split the companion uses.
DELTA = 1e-5
#: The privacy budgets of the privacy-utility curve.
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
#: How per-sample gradients are clipped: "bk" (book-keeping, :mod:`pets_lite.clipping`, one backward
#: pass) and Opacus' "ghost" (two backward passes), "hooks" and "functorch"; "auto" picks the first
#: that supports every trainable layer of the model (:func:`grad_sample_mode_for`).
GRAD_SAMPLE_MODES = ("auto", "bk", "ghost", "hooks", "functorch")


@dataclass(frozen=True)
class DPRecipe(Recipe):
    """The DP-SGD recipe of chapter 02, chosen on the validation split at epsilon = 8
    (``benchmarks/recipe_search.py dp``); shared with 07 and 10. Full mode: 20 epochs of 4,708
    images at (expected) batch 256; fast mode: 5 epochs at batch 64."""

    epsilon: float = 8.0
    delta: float = DELTA
    width: int = 16
    depth: int = 3
    epochs: int = 20
    batch_size: int = 256
    lr: float = 5e-3
    max_grad_norm: float = 1.0
    optimizer: str = "adam"
    accountant: str = "rdp"
    grad_sample_mode: str = "auto"

    FAST = {"epochs": 5, "batch_size": 64}

    def problems(self) -> list[str]:
        out = super().problems() + self.positive("epsilon", "width", "depth", "epochs",
                                                 "batch_size", "lr", "max_grad_norm")
        if not 0 < self.delta < 1:
            out.append(f"delta must lie in (0, 1), got {self.delta}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            out.append(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}")
        if self.optimizer != "adam":
            out.append("optimizer: only 'adam' is implemented")
        return out


#: The chapter's DP recipe (full mode; ``DP_RECIPE.variant()`` follows ``PETS_FAST``).
DP_RECIPE = DPRecipe()


class DPConfigError(ValueError):
    """A privacy or training setting that DP-SGD cannot honour; the message says what to change."""


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------

def check_budget(epsilon: float | None, delta: float, n: int | None = None) -> None:
    """Raise :class:`DPConfigError` on ε ≤ 0 or δ outside (0, 1); warn when δ > 1/N.

    >>> check_budget(8.0, 1e-5, n=4708)
    """
    if epsilon is not None and not (isinstance(epsilon, (int, float)) and epsilon > 0
                                    and math.isfinite(epsilon)):
        raise DPConfigError(f"epsilon must be a finite number > 0, got {epsilon!r}; smaller epsilon "
                            "means more privacy (try 1 to 8), and epsilon=inf is not DP at all: "
                            "train without DP instead.")
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


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model`` (they mix examples, so DP-SGD cannot use them)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_model(model: nn.Module) -> None:
    """Raise :class:`DPConfigError` for a model DP-SGD cannot train (BatchNorm, in-place ops...)."""
    from opacus.validators import ModuleValidator

    bn = batchnorm_layers(model)
    if bn:
        raise DPConfigError(
            f"the model has BatchNorm layers ({', '.join(bn[:4])}{'...' if len(bn) > 4 else ''}): "
            "BatchNorm normalises with statistics of the whole batch, so one example's gradient "
            "depends on the others and per-sample clipping no longer bounds its influence. Build "
            "the model with norm='group', or call pets_lite.dp.make_dp_ready(model) to replace them "
            "by GroupNorm.")
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise DPConfigError("Opacus cannot train this model: " + "; ".join(map(str, errors))
                            + ". Call pets_lite.dp.make_dp_ready(model) first.")


class OutOfPlace(nn.Module):
    """Returns a copy of its input, so that a later in-place op does not touch a hooked output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def make_dp_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` Opacus can train: BatchNorm -> GroupNorm, no in-place operations.

    Opacus records activations and backprops with full backward hooks, and PyTorch forbids
    in-place changes to a hooked module's output (pytorch/pytorch#61519). MONAI networks do both
    kinds: ``ReLU(inplace=True)`` (turned off here via each module's ``inplace`` flag) and, in its
    ResNet blocks, ``out += residual`` on the output of the last norm layer (each norm layer is
    followed here by :class:`OutOfPlace`, a copy). ``ModuleValidator.fix`` swaps BatchNorm for
    GroupNorm, and the result is validated strictly.
    """
    from opacus.validators import ModuleValidator

    model = copy.deepcopy(model)
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the validator warns about each replacement it makes
        model = ModuleValidator.fix(model)
    norms = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, norms) and not isinstance(parent, nn.Sequential):
                setattr(parent, name, nn.Sequential(child, OutOfPlace()))
    ModuleValidator.validate(model, strict=True)
    return model


def grad_sample_mode_for(model: nn.Module) -> str:
    """The default DP-SGD engine for ``model``: ``"bk"`` (book-keeping clipping, one backward pass)
    when :mod:`pets_lite.clipping` can clip it (a rule for every trainable layer, no tied weights), else ``"ghost"`` when
    Opacus' fast-gradient-clipping module supports them all, else ``"hooks"``."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping as Ghost

    from . import clipping

    if clipping.refusal(model) is None:
        return "bk"
    for _, module in clipping.trainable_layers(model):
        if type(module) not in Ghost.GRAD_SAMPLERS and type(module) not in Ghost.NORM_SAMPLERS:
            return "hooks"
    return "ghost"


# ----------------------------------------------------------------------------------------------
# Accounting
# ----------------------------------------------------------------------------------------------

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
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)),
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
        report["dp_accounting_rdp"] = dp_accounting_epsilon(noise_multiplier, sample_rate, steps, delta, "rdp")
        report["dp_accounting_pld"] = dp_accounting_epsilon(noise_multiplier, sample_rate, steps, delta, "pld")
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


# ----------------------------------------------------------------------------------------------
# Per-sample gradients (for the figure of norms before and after clipping)
# ----------------------------------------------------------------------------------------------

def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each example's full loss gradient, flattened: shape (B, number of parameters) (torch.func)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_fn(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    was_training = model.training
    model.eval()  # no dropout: the same function DP-SGD differentiates
    try:
        grads = vmap(grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)
    finally:
        model.train(was_training)
    return torch.cat([g.flatten(1) for g in grads.values()], dim=1)


def dp_sgd_step_anatomy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        max_grad_norm: float = 1.0, noise_multiplier: float = 1.0,
                        seed: int = 0) -> dict:
    """One DP-SGD step taken apart: per-sample norms before/after clipping to C, the norm of the
    clipped sum, the norm of the Gaussian noise N(0, σ²C²I), and the cosine between the noisy and
    the non-private mean gradient."""
    check_clip(max_grad_norm)
    g = per_sample_grads(model, x, y)
    norms = g.norm(dim=1)
    clipped = g * torch.clamp(max_grad_norm / (norms + 1e-6), max=1.0).unsqueeze(1)
    noise = torch.randn(g.shape[1], generator=torch.Generator().manual_seed(seed))
    noise = noise * noise_multiplier * max_grad_norm
    noisy = (clipped.sum(0) + noise) / len(y)
    clean = g.mean(0)
    cosine = float(torch.nn.functional.cosine_similarity(noisy, clean, dim=0))
    return {"norms_before": norms.numpy(), "norms_after": clipped.norm(dim=1).numpy(),
            "clipped_fraction": float((norms > max_grad_norm).float().mean()),
            "clipped_sum_norm": float(clipped.sum(0).norm()), "noise_norm": float(noise.norm()),
            "n_params": int(g.shape[1]), "cosine_noisy_vs_clean": cosine}


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

@dataclass
class DPResult:
    """What :func:`train_dp` measured: the history, the noise, and the ε actually spent."""

    history: train.History
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    target_epsilon: float | None
    grad_sample_mode: str
    epsilon: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able form (for the model cache)."""
        d = {k: v for k, v in vars(self).items() if k != "history"}
        d["history"] = vars(self.history)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DPResult":
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "history": train.History(**d["history"])})


def make_private(engine, mode: str, *, module: nn.Module, optimizer: torch.optim.Optimizer,
                 data_loader: DataLoader, criterion: nn.Module, noise_multiplier: float,
                 max_grad_norm: float, noise_generator=None, poisson_sampling: bool = True):
    """Opacus' ``make_private`` for any of :data:`GRAD_SAMPLE_MODES` except "auto": returns
    ``(module, optimizer, criterion, data_loader)`` in every mode (the criterion is wrapped where
    the mode clips in ``loss.backward()``: "bk" and "ghost")."""
    from . import clipping

    kwargs = dict(module=module, optimizer=optimizer, data_loader=data_loader, criterion=criterion,
                  noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                  poisson_sampling=poisson_sampling, noise_generator=noise_generator)
    if mode == "bk":
        return clipping.make_private(engine, **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        out = engine.make_private(grad_sample_mode=mode, **kwargs)
    return out if mode == "ghost" else (out[0], out[1], criterion, out[2])


def train_dp(model: nn.Module, train_set: Dataset, val: Dataset | None = None, *,
             epsilon: float | None = None, noise_multiplier: float | None = None,
             delta: float = DELTA, epochs: int = 5, batch_size: int = 256, lr: float = 2e-3,
             max_grad_norm: float = 1.0, grad_sample_mode: str = "auto", seed: int = 0,
             accountant: str = "rdp", crosscheck: bool = False, progress: bool = True,
             desc: str = "DP-SGD") -> DPResult:
    """DP-SGD (DP-Adam) with Opacus: Poisson sampling at rate ``batch_size / N``, per-sample
    clipping to ``max_grad_norm``, Gaussian noise of σ = ``noise_multiplier`` (or the σ that meets
    ``epsilon`` after ``epochs`` under ``accountant``). Trains ``model`` in place; keeps the best
    validation-AUC epoch.
    """
    from opacus import PrivacyEngine

    if (epsilon is None) == (noise_multiplier is None):
        raise DPConfigError("give exactly one of epsilon (a target budget) or noise_multiplier")
    n = len(train_set)
    check_budget(epsilon, delta, n)
    check_clip(max_grad_norm)
    if noise_multiplier is not None and not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise DPConfigError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if epochs < 1 or batch_size < 1 or batch_size > n:
        raise DPConfigError(f"need epochs >= 1 and 1 <= batch_size <= N={n}, got epochs={epochs}, "
                            f"batch_size={batch_size}")
    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise DPConfigError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}")
    check_model(model)
    mode = grad_sample_mode_for(model) if grad_sample_mode == "auto" else grad_sample_mode
    if mode == "bk":
        from . import clipping

        reason = clipping.refusal(model)
        if reason:
            raise DPConfigError(f"grad_sample_mode='bk': {reason}; use 'auto', 'ghost' or 'hooks'")

    device = config.device()
    model.to(device)
    torch.manual_seed(seed)
    data_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(seed), num_workers=0)
    sample_rate = 1 / len(data_loader)
    steps = epochs * len(data_loader)
    if noise_multiplier is None:
        noise_multiplier = noise_multiplier_for(epsilon, delta, sample_rate, steps, accountant)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    engine = PrivacyEngine(accountant=accountant)
    dp_module, dp_optimizer, criterion, dp_loader = make_private(
        engine, mode, module=model, optimizer=optimizer, data_loader=data_loader,
        criterion=criterion, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        noise_generator=torch.Generator(device=device).manual_seed(seed))

    history = train.History()
    best = train.BestOnValidation(history, [model],
                                  (lambda: train.evaluate(model, val)) if val is not None else None)
    bar = config.progress(range(epochs), desc=desc, disable=not progress)
    try:
        for epoch in bar:
            start = time.perf_counter()
            dp_module.train()
            total, count = 0.0, 0
            for x, y in dp_loader:
                if len(y) == 0:  # Poisson sampling can draw an empty batch: still a (noisy) step
                    x = torch.zeros((0, *train_set[0][0].shape))
                x, y = x.to(device), y.to(device)
                dp_optimizer.zero_grad(set_to_none=True)
                loss = criterion(dp_module(x), y)
                loss.backward()
                dp_optimizer.step()
                if len(y):
                    total += float(loss.item()) * len(y)
                    count += len(y)
            history.train_loss.append(total / max(count, 1))
            history.epoch_seconds.append(time.perf_counter() - start)
            best.update(epoch)
    finally:
        if hasattr(dp_module, "remove_hooks"):
            dp_module.remove_hooks()
        for p in model.parameters():  # leave no per-sample state on the plain model
            for attr in ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample"):
                if hasattr(p, attr):
                    delattr(p, attr)
    best.restore()
    model.eval()
    spent_steps = int(sum(s for _, _, s in engine.accountant.history)) if engine.accountant.history else steps
    if crosscheck:
        spent = epsilon_report(noise_multiplier, sample_rate, spent_steps, delta)
    else:
        spent = {accountant: opacus_epsilon(noise_multiplier, sample_rate, spent_steps, delta, accountant)}
    return DPResult(history=history, noise_multiplier=float(noise_multiplier),
                    sample_rate=float(sample_rate), steps=spent_steps, delta=delta,
                    target_epsilon=epsilon, grad_sample_mode=mode, epsilon=spent)


def dp_cnn(in_channels: int = 1, n_classes: int = 2, width: int | None = None,
           depth: int | None = None) -> nn.Module:
    """The chapter's DP model: :class:`pets_lite.models.SmallCNN` with GroupNorm, recipe width."""
    from . import models

    return models.build_model("cnn", in_channels=in_channels, n_classes=n_classes,
                              width=width or DP_RECIPE.width, depth=depth or DP_RECIPE.depth)


def dp_model(epsilon: float | None = None, seed: int | None = None, fast: bool | None = None,
             flag: str | None = None, refresh: bool = False, progress: bool = True,
             recipe: DPRecipe = DP_RECIPE, **changes):
    """A DP-SGD model of the chapter's recipe: trained once per recipe, cached, reused (chapter 07
    audits these). ``epsilon``, ``seed``, ``flag`` and ``changes`` (``batch_size``, ``epochs``,
    ``lr``, ...) replace the recipe's fields; ``fast=None`` follows ``PETS_FAST``.

    Returns ``(model, splits, DPResult)``. The engine that "auto" picks enters the cache key
    resolved.
    """
    from . import data

    given = {"epsilon": None if epsilon is None else float(epsilon), "seed": seed, "flag": flag}
    recipe = recipe.variant(fast).replace(**{k: v for k, v in given.items() if v is not None},
                                          **changes)
    meta = data.info(recipe.flag)
    splits = data.load_splits(recipe.flag, fast=recipe.fast, seed=recipe.seed)
    check_budget(recipe.epsilon, recipe.delta, len(splits["train"]))

    def build():
        return dp_cnn(meta.n_channels, meta.n_classes, recipe.width, recipe.depth)

    if recipe.grad_sample_mode == "auto":  # the engine that trains the model enters the cache key
        with torch.random.fork_rng(devices=[]):
            recipe = recipe.replace(grad_sample_mode=grad_sample_mode_for(build()))

    def train_fn(model):
        result = train_dp(model, splits["train"], splits["val"], epsilon=recipe.epsilon,
                          delta=recipe.delta, epochs=recipe.epochs, batch_size=recipe.batch_size,
                          lr=recipe.lr, max_grad_norm=recipe.max_grad_norm,
                          grad_sample_mode=recipe.grad_sample_mode, seed=recipe.seed,
                          accountant=recipe.accountant, crosscheck=False, progress=progress,
                          desc=f"DP-SGD eps={recipe.epsilon:g} seed={recipe.seed}")
        return result.to_dict()

    model, results, _ = cached_model("dp_cnn", recipe, build, train_fn, refresh=refresh)
    model.eval()
    return model, splits, DPResult.from_dict(results)


def sweep(epsilons=EPSILONS, seeds=(0,), fast: bool | None = None, flag: str | None = None,
          progress: bool = True, **overrides) -> list[dict]:
    """The privacy-utility curve: one cached :func:`dp_model` per (ε, seed), evaluated on the test
    split once. Rows: ``epsilon, seed, sigma, eps_rdp, eps_prv, eps_gdp, val_auc, test_auc,
    test_acc, seconds``."""
    rows = []
    for eps in epsilons:
        for seed in seeds:
            model, splits, res = dp_model(eps, seed=seed, fast=fast, flag=flag, progress=progress,
                                          **overrides)
            test = train.evaluate(model, splits["test"])
            rows.append({"epsilon": float(eps), "seed": seed, "sigma": res.noise_multiplier,
                         **{f"eps_{k}": v for k, v in res.epsilon.items()},
                         "val_auc": res.history.best_val_auc, "test_auc": test["auc"],
                         "test_acc": test["acc"], "seconds": res.history.total_seconds,
                         "mode": res.grad_sample_mode,
                         "epoch_seconds": float(np.mean(res.history.epoch_seconds))})
    return rows


# ----------------------------------------------------------------------------------------------
# What DP-SGD costs in time (benchmarks/dp_overhead.py and the chapter's figure)
# ----------------------------------------------------------------------------------------------

#: The engines the overhead measurement compares; the first is the reference.
OVERHEAD_MODES = ("non-private", "bk", "ghost", "hooks", "functorch")


def epoch_seconds(mode: str, dataset: Dataset, batch_size: int = 256, width: int | None = None,
                  seed: int = 0) -> float:
    """Seconds for one training epoch of the DP recipe's CNN on ``dataset``: ``"non-private"`` (plain
    Adam, shuffled batches) or DP-SGD with one of :data:`GRAD_SAMPLE_MODES` (σ = 1, C = 1, Poisson
    batches of the same expected size). Model and engine set-up are not timed."""
    from opacus import PrivacyEngine

    device = config.device()
    torch.manual_seed(seed)
    x0, _ = dataset[0]
    model = dp_cnn(in_channels=x0.shape[0], width=width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    criterion = nn.CrossEntropyLoss()
    if mode != "non-private":
        mode = grad_sample_mode_for(model) if mode == "auto" else mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, optimizer, criterion, loader = make_private(
                PrivacyEngine(), mode, module=model, optimizer=optimizer, data_loader=loader,
                criterion=criterion, noise_multiplier=1.0, max_grad_norm=1.0)
    model.train()
    _sync(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")  # once per step
        for x, y in loader:
            if len(y) == 0:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def overhead(dataset: Dataset, modes=OVERHEAD_MODES, rounds: int = 3, batch_size: int = 256,
             width: int | None = None, warmup: bool = True, progress: bool = True) -> dict[str, list[float]]:
    """Epoch seconds per mode, measured side by side: each round times one epoch in every mode (the
    DP modes in alternating order, so that a busy machine slows them all alike), after one
    unmeasured warm-up epoch per mode (one-off costs: kernel set-up for each new Poisson batch
    size, the allocator). ``modes[0]`` is the reference (``"non-private"``)."""
    modes = list(modes)
    if not modes or modes[0] != "non-private":
        raise ValueError("modes must start with 'non-private' (the reference)")
    unknown = set(modes[1:]) - set(GRAD_SAMPLE_MODES)
    if unknown:
        raise DPConfigError(f"unknown modes {sorted(unknown)}; choose from {GRAD_SAMPLE_MODES}")
    if warmup:
        for mode in modes:
            epoch_seconds(mode, dataset, batch_size, width, seed=rounds)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in config.progress(range(rounds), desc="DP overhead rounds", disable=not progress):
        order = modes if r % 2 == 0 else [modes[0]] + modes[:0:-1]
        for mode in order:
            times[mode].append(epoch_seconds(mode, dataset, batch_size, width, seed=r))
    return times


def overhead_summary(times: dict[str, list[float]]) -> list[dict]:
    """Per mode: median epoch seconds and the median, min and max of its ratio to the reference
    (the first mode) over the rounds."""
    reference = np.array(next(iter(times.values())))
    rows = []
    for mode, seconds in times.items():
        ratios = np.array(seconds) / reference
        rows.append({"mode": mode, "median_s": float(np.median(seconds)),
                     "ratio": float(np.median(ratios)), "ratio_min": float(ratios.min()),
                     "ratio_max": float(ratios.max())})
    return rows
