"""DP-SGD with Opacus: the chapter's recipe, one set-up of private training, the training loop, the
cached models of the book, and the privacy-utility sweep.

* :func:`private_training` builds what DP-SGD steps with (the Poisson loader, the clipping engine,
  the noisy optimiser, the accountant) for one model and data set; :func:`train_dp` trains with it
  and :mod:`pets_lite.dp.checks` measures what it hands the optimiser, so the check and the
  training run the same code.
* :func:`train_dp` keeps the best validation-AUC epoch (selection on held-out data is
  post-processing: it costs no privacy of the training set).
* :func:`dp_model` returns a DP model of the companion's recipe, trained once and stored in the
  model cache, so later chapters (07 attacks and audits, 10) reuse it.

Randomness: the Poisson sampler and the noise draw from their own generators, seeded by
``config.derive_seed(seed, "poisson sampling")`` and ``config.derive_seed(seed, "dp noise")``
(two independent streams), and the loop runs under :func:`pets_lite.config.seeded`, so the
caller's global generator is left as it was. Seeded noise makes a lesson reproducible; it also
makes the noise predictable to anyone who knows the seed, so a model trained this way is a
teaching run, not a DP release.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import config, train
from ..recipes import Recipe, cached_model
from .accounting import (
    DELTA,
    EPSILONS,
    DPConfigError,
    check_budget,
    check_clip,
    epsilon_report,
    noise_multiplier_for,
    opacus_epsilon,
    sampling,
)
from .readiness import GRAD_SAMPLE_MODES, check_model, grad_sample_mode_for, resolve_mode


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
    def from_dict(cls, d: dict) -> DPResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "history": train.History(**d["history"])})


def make_private(engine, mode: str, *, module: nn.Module, optimizer: torch.optim.Optimizer,
                 data_loader: DataLoader, criterion: nn.Module, noise_multiplier: float,
                 max_grad_norm: float, noise_generator=None, poisson_sampling: bool = True):
    """Opacus' ``make_private`` for any of :data:`GRAD_SAMPLE_MODES` except "auto": returns
    ``(module, optimizer, criterion, data_loader)`` in every mode (the criterion is wrapped where
    the mode clips in ``loss.backward()``: "bk" and "ghost")."""
    from .. import clipping

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


#: Per-sample state Opacus leaves on parameters.
PER_SAMPLE_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample")


@dataclass
class PrivateTraining:
    """DP-SGD ready to step: the wrapped ``module`` of ``model``, the noisy ``optimizer`` (an
    Opacus ``DPOptimizer`` around Adam), the ``criterion``, the Poisson ``loader``, the Opacus
    ``engine`` whose accountant records every step, the clipping ``mode``, and what the
    accountant is told (``noise_multiplier``, ``sample_rate``)."""

    model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: object
    loader: DataLoader
    engine: object
    mode: str
    noise_multiplier: float
    sample_rate: float

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One DP-SGD step on a batch (clip, sum, add noise, average, Adam); the batch loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.criterion(self.module(x), y)
        loss.backward()
        self.optimizer.step()
        return loss

    def close(self) -> None:
        """Detach the clipping engine and leave no per-sample state on the plain model."""
        if hasattr(self.module, "remove_hooks"):
            self.module.remove_hooks()
        for p in self.model.parameters():
            for attr in PER_SAMPLE_ATTRS:
                if hasattr(p, attr):
                    delattr(p, attr)


def private_training(model: nn.Module, train_set: Dataset, *, noise_multiplier: float,
                     batch_size: int, lr: float = 2e-3, max_grad_norm: float = 1.0,
                     grad_sample_mode: str = "auto", seed: int = 0,
                     accountant: str = "rdp") -> PrivateTraining:
    """Set up DP-SGD (DP-Adam) for ``model`` on ``train_set``: Poisson sampling at rate
    q = 1 / ceil(N / ``batch_size``), per-sample clipping to ``max_grad_norm``, Gaussian noise of
    std ``noise_multiplier`` x ``max_grad_norm`` on the clipped sum, divided by the expected
    batch size qN. The model moves to :func:`pets_lite.config.device`."""
    from opacus import PrivacyEngine

    check_clip(max_grad_norm)
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise DPConfigError(f"noise_multiplier must be a finite number >= 0, "
                            f"got {noise_multiplier!r}")
    sample_rate, _ = sampling(len(train_set), batch_size)
    check_model(model)
    mode = resolve_mode(model, grad_sample_mode)
    device = config.device()
    model.to(device)
    data_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=0,
                             generator=torch.Generator().manual_seed(
                                 config.derive_seed(seed, "poisson sampling")))
    engine = PrivacyEngine(accountant=accountant)
    noise = torch.Generator(device=device).manual_seed(config.derive_seed(seed, "dp noise"))
    module, optimizer, criterion, loader = make_private(
        engine, mode, module=model, optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        data_loader=data_loader, criterion=nn.CrossEntropyLoss(),
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        noise_generator=noise, poisson_sampling=True)
    return PrivateTraining(model, module, optimizer, criterion, loader, engine, mode,
                           float(noise_multiplier), float(sample_rate))


def train_dp(model: nn.Module, train_set: Dataset, val: Dataset | None = None, *,
             epsilon: float | None = None, noise_multiplier: float | None = None,
             delta: float = DELTA, epochs: int = 5, batch_size: int = 256, lr: float = 2e-3,
             max_grad_norm: float = 1.0, grad_sample_mode: str = "auto", seed: int = 0,
             accountant: str = "rdp", crosscheck: bool = False, progress: bool = True,
             desc: str = "DP-SGD") -> DPResult:
    """DP-SGD (DP-Adam) with Opacus (:func:`private_training`) for ``epochs`` epochs, with
    σ = ``noise_multiplier`` or the σ that meets ``epsilon`` after ``epochs`` under
    ``accountant``. Trains ``model`` in place; keeps the best validation-AUC epoch; reports the ε
    spent over the steps the accountant recorded.
    """
    if (epsilon is None) == (noise_multiplier is None):
        raise DPConfigError("give exactly one of epsilon (a target budget) or noise_multiplier")
    n = len(train_set)
    check_budget(epsilon, delta, n)
    check_clip(max_grad_norm)
    sample_rate, steps = sampling(n, batch_size, epochs)
    if noise_multiplier is None:
        noise_multiplier = noise_multiplier_for(epsilon, delta, sample_rate, steps, accountant)
    run = private_training(model, train_set, noise_multiplier=noise_multiplier,
                           batch_size=batch_size, lr=lr, max_grad_norm=max_grad_norm,
                           grad_sample_mode=grad_sample_mode, seed=seed, accountant=accountant)
    device = config.device()
    history = train.History()
    best = train.BestOnValidation(history, [model],
                                  (lambda: train.evaluate(model, val)) if val is not None else None)
    bar = config.progress(range(epochs), desc=desc, disable=not progress)
    try:
        with config.seeded(config.derive_seed(seed, "dp training")):
            for epoch in bar:
                start = time.perf_counter()
                run.module.train()
                total, count = 0.0, 0
                for x, y in run.loader:
                    if len(y) == 0:  # Poisson sampling can draw an empty batch: still a noisy step
                        x = torch.zeros((0, *train_set[0][0].shape))
                    loss = run.step(x.to(device), y.to(device))
                    if len(y):
                        total += float(loss.item()) * len(y)
                        count += len(y)
                history.train_loss.append(total / max(count, 1))
                history.epoch_seconds.append(time.perf_counter() - start)
                best.update(epoch)
    finally:
        run.close()
    best.restore()
    model.eval()
    recorded = run.engine.accountant.history
    spent_steps = int(sum(s for _, _, s in recorded)) if recorded else steps
    if crosscheck:
        spent = epsilon_report(run.noise_multiplier, sample_rate, spent_steps, delta)
    else:
        spent = {accountant: opacus_epsilon(run.noise_multiplier, sample_rate, spent_steps, delta,
                                            accountant)}
    return DPResult(history=history, noise_multiplier=run.noise_multiplier,
                    sample_rate=float(sample_rate), steps=spent_steps, delta=delta,
                    target_epsilon=epsilon, grad_sample_mode=run.mode, epsilon=spent)


def dp_cnn(in_channels: int = 1, n_classes: int = 2, width: int | None = None,
           depth: int | None = None) -> nn.Module:
    """The chapter's DP model: :class:`pets_lite.models.SmallCNN` with GroupNorm, recipe width."""
    from .. import models

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
    from .. import data

    given = {"epsilon": None if epsilon is None else float(epsilon), "seed": seed, "flag": flag}
    recipe = recipe.variant(fast).replace(**{k: v for k, v in given.items() if v is not None},
                                          **changes)
    meta = data.info(recipe.flag)
    splits = data.load_splits(recipe.flag, fast=recipe.fast, seed=recipe.seed)
    check_budget(recipe.epsilon, recipe.delta, len(splits["train"]))

    def build():
        return dp_cnn(meta.n_channels, meta.n_classes, recipe.width, recipe.depth)

    if recipe.grad_sample_mode == "auto":  # the engine that trains the model enters the cache key
        with config.seeded(recipe.seed):
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
    split once. Rows: ``epsilon, seed, sigma, eps_rdp, val_auc, test_auc, test_acc, seconds,
    mode, epoch_seconds``."""
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


def privacy_utility_curve(rows: list[dict]):
    """The :func:`sweep` rows aggregated per ε (a pandas DataFrame indexed by ε): mean and spread
    of the test AUC over seeds, mean validation AUC and test accuracy, σ, the largest ε spent
    (RDP) and the mean training seconds."""
    import pandas as pd

    return pd.DataFrame(rows).groupby("epsilon").agg(
        test_auc=("test_auc", "mean"), test_auc_sd=("test_auc", "std"),
        val_auc=("val_auc", "mean"), test_acc=("test_acc", "mean"), sigma=("sigma", "first"),
        eps_rdp=("eps_rdp", "max"), seconds=("seconds", "mean"))
