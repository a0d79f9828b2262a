"""Training and evaluation: seeded loops with progress bars, AUC/ACC, best-on-validation selection."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import config


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


def auc_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: of the positive class for two classes, one-vs-rest macro average otherwise.

    >>> auc_score(np.array([0, 0, 1, 1]), np.array([[.9, .1], [.6, .4], [.3, .7], [.2, .8]]))
    1.0
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.ndim == 1:
        return float(roc_auc_score(labels, probs))
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro",
                               labels=np.arange(probs.shape[1])))


def loader(dataset: Dataset, batch_size: int = 256, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """A single-process DataLoader; shuffling draws from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=0)


@torch.no_grad()
def predict_proba(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 512,
                  device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (N, C), labels (N,))`` of ``model`` over a dataset or loader."""
    device = device or next(model.parameters()).device
    data = data if isinstance(data, DataLoader) else loader(data, batch_size)
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for x, y in data:
        probs.append(torch.softmax(model(x.to(device)), dim=1).cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def evaluate(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 512) -> dict[str, float]:
    """``{"auc", "acc", "loss"}`` of ``model`` on ``data``."""
    probs, labels = predict_proba(model, data, batch_size)
    eps = 1e-12
    loss = float(-np.mean(np.log(probs[np.arange(len(labels)), labels] + eps)))
    return {"auc": auc_score(labels, probs), "acc": float(np.mean(probs.argmax(1) == labels)),
            "loss": loss}


def fit(model: nn.Module, train: Dataset, val: Dataset | None = None, epochs: int = 10,
        lr: float = 1e-3, batch_size: int = 128, weight_decay: float = 1e-4, seed: int = 0,
        device: torch.device | None = None, progress: bool = True, desc: str = "train",
        optimizer: torch.optim.Optimizer | None = None) -> History:
    """Train with AdamW and cross-entropy; keep the weights of the best validation-AUC epoch.

    The model is trained in place and ends with the selected weights. Deterministic for a seed on
    the CPU (seeded shuffling, single-process loading).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = device or config.device()
    model.to(device)
    torch.manual_seed(seed)
    train_loader = loader(train, batch_size, shuffle=True, seed=seed)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    history = History()
    best = BestOnValidation(history, [model], (lambda: evaluate(model, val)) if val is not None else None)
    bar = config.progress(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
        history.train_loss.append(total / max(count, 1))
        history.epoch_seconds.append(time.perf_counter() - start)
        metrics = best.update(epoch)
        bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}",
                        **({"val_auc": f"{metrics['auc']:.3f}"} if metrics else {}))
    best.restore()
    return history


class BestOnValidation:
    """Selection on held-out data, epoch by epoch: ``update(epoch)`` runs ``score()`` (a metrics dict
    with ``"auc"`` and ``"acc"``), appends them to ``history`` and keeps a copy of ``modules``' weights
    when the AUC is the best so far; ``restore()`` loads the kept weights. Without ``score`` (no
    validation data) the last epoch is the selected one."""

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


#: Bump when a change to training or models alters what a cached model would be.
CACHE_VERSION = 2


def cache_key(spec: dict) -> str:
    """A short stable hash of a JSON-able configuration (with :data:`CACHE_VERSION`)."""
    import hashlib
    import json

    blob = json.dumps({"spec": spec, "version": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_model(name: str, spec: dict, build, train_fn, refresh: bool = False):
    """Train a model once per configuration and reuse it across notebooks.

    ``build()`` makes the untrained model; ``train_fn(model)`` trains it in place and returns a
    JSON-able dict of results (metrics, history). Both are stored under
    ``config.cache_dir()/models/<name>-<hash of spec>``; any change to ``spec`` (which must name every
    setting that affects the weights: data, seed, epochs, model kwargs...) gives a new key, so a stale
    model is never reused. Returns ``(model, results, from_cache)``.
    """
    import json

    key = cache_key(spec)
    folder = config.cache_dir() / "models"
    weights = folder / f"{name}-{key}.pt"
    meta = folder / f"{name}-{key}.json"
    model = build()
    if weights.exists() and meta.exists() and not refresh:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        stored = json.loads(meta.read_text())
        if stored.get("spec") == json.loads(json.dumps(spec, default=str)):
            return model, stored["results"], True
    results = train_fn(model)
    folder.mkdir(parents=True, exist_ok=True)
    for path, write in ((weights, lambda p: torch.save(model.state_dict(), p)),
                        (meta, lambda p: p.write_text(json.dumps(
                            {"spec": spec, "results": results}, default=str, indent=1)))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        write(tmp)
        tmp.replace(path)
    return model, results, False


#: The baseline recipe of chapter 00, shared by every chapter that compares against it.
BASELINE = {"width": 32, "depth": 3, "epochs": 12, "fast_epochs": 5, "batch_size": 128, "lr": 2e-3}


def baseline_model(flag: str = "pneumoniamnist", seed: int = 0, fast: bool | None = None,
                   refresh: bool = False, progress: bool = True):
    """Chapter 00's non-private baseline: trained once per (flag, seed, mode), cached, reused.

    Returns ``(model, splits, history)``; ``splits`` are the ``{"train", "val", "test"}`` datasets
    it was trained and selected on (fast-mode subsets when ``fast``).
    """
    from . import data, models

    fast = config.is_fast() if fast is None else fast
    meta = data.info(flag)
    epochs = BASELINE["fast_epochs"] if fast else BASELINE["epochs"]
    splits = data.load_splits(flag, fast=fast, seed=seed)
    spec = {"flag": flag, "md5": meta.md5, "fast": fast, "seed": seed, "epochs": epochs,
            **{k: BASELINE[k] for k in ("width", "depth", "batch_size", "lr")}}

    def build():  # seeded here, so a cache miss in any chapter builds the same initial model
        torch.manual_seed(seed)
        return models.build_model("cnn", in_channels=meta.n_channels, n_classes=meta.n_classes,
                                  width=BASELINE["width"], depth=BASELINE["depth"])

    def train_fn(model):
        config.seed_everything(seed)
        history = fit(model, splits["train"], splits["val"], epochs=epochs, lr=BASELINE["lr"],
                      batch_size=BASELINE["batch_size"], seed=seed, progress=progress,
                      desc=f"baseline {flag}")
        return {"history": vars(history)}

    model, results, _ = cached_model("baseline_cnn", spec, build, train_fn, refresh=refresh)
    model.eval()
    return model, splits, History(**results["history"])
