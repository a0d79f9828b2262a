"""Training and evaluation: one epoch loop, ``fit`` with best-on-validation selection, a weighted
average, evaluation (AUC/ACC from :mod:`pets_lite.metrics`) and chapter 00's baseline recipe.

:func:`train_epoch` is the one pass over a loader that every plain-PyTorch trainer of the book
runs (centralized training, a hospital's local epochs in :mod:`pets_lite.fl`);
:func:`weighted_average` is the one weighted mean of parameter lists (FedAvg's aggregate, and
what an attacker reconstructs from it).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import config, metrics
from .recipes import Recipe, cached_model


@dataclass
class History:
    """What :func:`fit` measured, epoch by epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_auc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def best_val_auc(self) -> float:
        return self.val_auc[self.best_epoch] if self.best_epoch >= 0 else float("nan")

    @property
    def total_seconds(self) -> float:
        return float(sum(self.epoch_seconds))


def loader(dataset: Dataset, batch_size: int = 256, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """A single-process DataLoader; shuffling draws from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=0)


@torch.no_grad()
def predict_logits(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 512,
                   device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C) as float64, labels (N,))`` of ``model`` over a dataset or loader."""
    device = device or next(model.parameters()).device
    data = data if isinstance(data, DataLoader) else loader(data, batch_size)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in data:
        logits.append(model(x.to(device)).double().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def predict_proba(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 512,
                  device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (N, C), labels (N,))`` of ``model`` over a dataset or loader (softmax in
    float64; rank by :func:`pets_lite.metrics.logit_scores` instead, which never saturates)."""
    logits, labels = predict_logits(model, data, batch_size, device)
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy(), labels


def evaluate(model: nn.Module, data: Dataset | DataLoader,
             batch_size: int = 512) -> dict[str, float]:
    """``{"auc", "acc", "loss"}`` of ``model`` on ``data``: the AUC ranks the logit margins
    (probabilities of confident models round to 1.0 and tie), the loss is the mean cross-entropy."""
    logits, labels = predict_logits(model, data, batch_size)
    log_p = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    loss = float(-np.mean(log_p[np.arange(len(labels)), labels]))
    return {"auc": metrics.auc_score(labels, metrics.logit_scores(logits)),
            "acc": metrics.accuracy(labels, logits), "loss": loss}


def train_epoch(model: nn.Module, batches, optimizer: torch.optim.Optimizer,
                criterion: nn.Module | None = None, device: torch.device | None = None,
                penalty=None) -> tuple[float, int]:
    """One pass over ``batches``: zero the gradients, loss (plus ``penalty()`` when given, e.g.
    FedProx's proximal term), backward, step. Returns ``(mean loss over examples, examples)``;
    the penalty is not part of the reported loss."""
    criterion = criterion or nn.CrossEntropyLoss()
    device = device or next(model.parameters()).device
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        if len(y):
            total += float(loss.item()) * len(y)
            count += len(y)
        if penalty is not None:
            loss = loss + penalty()
        loss.backward()
        optimizer.step()
    return total / max(count, 1), count


def fit(model: nn.Module, train: Dataset, val: Dataset | None = None, epochs: int = 10,
        lr: float = 1e-3, batch_size: int = 128, weight_decay: float = 1e-4, seed: int = 0,
        device: torch.device | None = None, progress: bool = True, desc: str = "train",
        optimizer: torch.optim.Optimizer | None = None) -> History:
    """Train with AdamW and cross-entropy; keep the weights of the best validation-AUC epoch.

    The model is trained in place and ends with the selected weights. Deterministic for a seed on
    the CPU (seeded shuffling, single-process loading, torch's generator seeded for the run and
    restored afterwards).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = device or config.device()
    model.to(device)
    train_loader = loader(train, batch_size, shuffle=True, seed=seed)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = History()
    score = (lambda: evaluate(model, val)) if val is not None else None
    best = BestOnValidation(history, [model], score)
    bar = config.progress(range(epochs), desc=desc, disable=not progress)
    with config.seeded(seed):
        for epoch in bar:
            start = time.perf_counter()
            loss, _ = train_epoch(model, train_loader, optimizer, device=device)
            history.train_loss.append(loss)
            history.epoch_seconds.append(time.perf_counter() - start)
            scores = best.update(epoch)
            bar.set_postfix(loss=f"{loss:.3f}",
                            **({"val_auc": f"{scores['auc']:.3f}"} if scores else {}))
    best.restore()
    return history


def weighted_average(arrays: list, weights=None) -> list:
    """The weighted mean of several parameter lists (NumPy arrays or tensors), entry by entry:
    FedAvg's aggregate. Equal weights when ``weights`` is None.

    >>> [a.tolist() for a in weighted_average([[np.ones(2)], [3 * np.ones(2)]], [1, 3])]
    [[2.5, 2.5]]
    """
    if not arrays:
        raise ValueError("weighted_average needs at least one list of arrays")
    weights = [1.0] * len(arrays) if weights is None else [float(w) for w in weights]
    if len(weights) != len(arrays) or min(weights) <= 0:
        raise ValueError(f"weights must be positive, one per list: {len(weights)} weights for "
                         f"{len(arrays)} lists")
    if len({len(a) for a in arrays}) != 1:
        raise ValueError("every list must hold the same number of arrays")
    total = sum(weights)
    return [sum(w * a[i] for w, a in zip(weights, arrays)) / total for i in range(len(arrays[0]))]


class BestOnValidation:
    """Selection on held-out data, epoch by epoch: ``update(epoch)`` runs ``score()`` (a metrics
    dict with ``"auc"`` and ``"acc"``), appends them to ``history`` and keeps a copy of ``modules``'
    weights when the AUC is the best so far; ``restore()`` loads the kept weights. Without
    ``score`` (no validation data) the last epoch is the selected one."""

    def __init__(self, history: History, modules: list[nn.Module], score=None):
        self.history, self.modules, self.score = history, modules, score
        self.best_auc, self.best_states = -np.inf, None

    def update(self, epoch: int) -> dict | None:
        """Score this epoch; returns its metrics (None without validation data)."""
        if self.score is None:
            self.history.best_epoch = epoch
            return None
        metrics = self.score()
        self.history.val_auc.append(metrics["auc"])
        self.history.val_acc.append(metrics["acc"])
        if metrics["auc"] > self.best_auc:
            self.best_auc, self.history.best_epoch = metrics["auc"], epoch
            self.best_states = [copy.deepcopy(m.state_dict()) for m in self.modules]
        return metrics

    def restore(self) -> None:
        """Load the weights of the selected epoch (nothing to do without validation data)."""
        for module, state in zip(self.modules, self.best_states or []):
            module.load_state_dict(state)


@dataclass(frozen=True)
class BaselineRecipe(Recipe):
    """Chapter 00's non-private baseline: SmallCNN (GroupNorm), AdamW, best validation epoch."""

    width: int = 32
    depth: int = 3
    epochs: int = 12
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4

    FAST = {"epochs": 5}

    def problems(self) -> list[str]:
        return super().problems() + self.positive("width", "depth", "epochs", "batch_size", "lr")


#: The baseline recipe of chapter 00, shared by every chapter that compares against it.
BASELINE = BaselineRecipe()


def baseline_model(flag: str | None = None, seed: int | None = None, fast: bool | None = None,
                   refresh: bool = False, progress: bool = True,
                   recipe: BaselineRecipe = BASELINE, image_size: int | None = None):
    """Chapter 00's non-private baseline: trained once per recipe (``flag`` and ``seed`` replace
    the recipe's; ``fast=None`` follows ``PETS_FAST``; ``image_size`` gives the recipe
    :meth:`~pets_lite.recipes.Recipe.at_size`), cached, reused.

    Returns ``(model, splits, history)``; ``splits`` are the ``{"train", "val", "test"}`` datasets
    it was trained and selected on (fast-mode subsets in fast mode).
    """
    from . import data, models

    recipe = recipe.variant(fast)
    recipe = recipe.replace(**{k: v for k, v in (("flag", flag), ("seed", seed)) if v is not None})
    if image_size is not None:
        recipe = recipe.at_size(image_size)
    meta = data.info(recipe.flag)
    splits = data.load_splits(recipe.flag, fast=recipe.fast, seed=recipe.seed,
                              image_size=recipe.image_size)

    def build():
        return models.build_model("cnn", in_channels=meta.n_channels, n_classes=meta.n_classes,
                                  width=recipe.width, depth=recipe.depth,
                                  image_size=recipe.image_size)

    def train_fn(model):
        history = fit(model, splits["train"], splits["val"], epochs=recipe.epochs, lr=recipe.lr,
                      batch_size=recipe.batch_size, weight_decay=recipe.weight_decay,
                      seed=recipe.seed, progress=progress, desc=f"baseline {recipe.flag}")
        return {"history": vars(history)}

    model, results, _ = cached_model("baseline_cnn", recipe, build, train_fn, refresh=refresh)
    model.eval()
    return model, splits, History(**results["history"])
