"""The hospital task (the ``task.py`` of a Flower App): its data, the model, local training with
FedProx's proximal term, and evaluation on its own validation images.

Everything here runs outside Flower too: the ClientApp (:mod:`pets_lite.fl.client`) calls
:func:`client_update` and :func:`client_evaluate`, and so can a test or a chapter.
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .. import config, data, models, train
from .settings import FLConfig, FLConfigError


@lru_cache(maxsize=16)
def hospital_data(flag: str, fast: bool, seed: int, n_hospitals: int, scheme: str, alpha: float,
                  min_size: int, hospital: int, image_size: int = 28) -> dict[str, TensorDataset]:
    """Hospital ``hospital``'s ``{"train", "val"}`` share (cached per process)."""
    if not 0 <= hospital < n_hospitals:
        raise FLConfigError(f"hospital index {hospital} is outside 0..{n_hospitals - 1}")
    splits = data.load_splits(flag, fast=fast, seed=seed, image_size=image_size)
    return data.partition_splits(splits, n_hospitals, scheme, alpha, seed, min_size)[hospital]


def config_data(cfg: FLConfig, hospital: int) -> dict[str, TensorDataset]:
    """:func:`hospital_data` for an experiment's settings."""
    return hospital_data(cfg.flag, cfg.fast, cfg.seed, cfg.n_hospitals, cfg.scheme,
                         float(cfg.alpha), cfg.min_size, hospital, cfg.image_size)


@lru_cache(maxsize=4)
def central_test(flag: str, fast: bool, seed: int, image_size: int = 28) -> TensorDataset:
    """The common test split every federated model is scored on (never dealt out)."""
    return data.load(flag, "test", fast=fast, seed=seed, image_size=image_size)


def build_model(cfg: FLConfig) -> nn.Module:
    """The experiment's global model (a :class:`pets_lite.models.SmallCNN`)."""
    meta = data.info(cfg.flag)
    return models.build_model("cnn", in_channels=meta.n_channels, n_classes=meta.n_classes,
                              width=cfg.width, depth=cfg.depth, image_size=cfg.image_size)


def proximal_term(model: nn.Module, mu: float):
    """FedProx's ``(mu/2) ||w - w_global||^2``, anchored at ``model``'s weights as they are now
    (the global model of this round): a ``penalty`` for :func:`pets_lite.train.train_epoch`."""
    anchor = [p.detach().clone() for p in model.parameters()]

    def penalty() -> torch.Tensor:
        return mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))

    return penalty


def local_train(model: nn.Module, dataset: TensorDataset, epochs: int = 1, lr: float = 1e-3,
                batch_size: int = 32, seed: int = 0, proximal_mu: float = 0.0) -> dict[str, float]:
    """Train in place with AdamW (:func:`pets_lite.train.train_epoch`); with ``proximal_mu > 0``
    FedProx's proximal term is added to every batch's loss (not to the reported loss)."""
    if len(dataset) == 0:
        raise FLConfigError("a hospital with no training images cannot train; check the partition")
    penalty = proximal_term(model, proximal_mu) if proximal_mu > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batches = train.loader(dataset, batch_size, shuffle=True, seed=seed)
    total, count, start = 0.0, 0, time.perf_counter()
    with config.seeded(seed):
        for _ in range(epochs):
            loss, n = train.train_epoch(model, batches, optimizer, penalty=penalty)
            total, count = total + loss * n, count + n
    return {"train-loss": total / max(count, 1), "train-seconds": time.perf_counter() - start}


def client_update(cfg: FLConfig, hospital: int, global_state: dict[str, torch.Tensor],
                  server_round: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One hospital's local step: ``(new state_dict, metrics)``, ``metrics["num-examples"]`` the
    weight FedAvg gives it. Its randomness is the stream of (seed, hospital, round)."""
    local = config_data(cfg, hospital)["train"]
    model = build_model(cfg)
    model.load_state_dict(global_state)
    metrics = local_train(model, local, cfg.local_epochs, cfg.lr, cfg.batch_size,
                          seed=config.derive_seed(cfg.seed, "hospital", hospital,
                                                  "round", server_round),
                          proximal_mu=cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0)
    metrics["num-examples"] = len(local)
    return model.state_dict(), metrics


def client_evaluate(cfg: FLConfig, hospital: int,
                    global_state: dict[str, torch.Tensor]) -> dict[str, float]:
    """The global model scored on one hospital's local validation images."""
    local = config_data(cfg, hospital)["val"]
    model = build_model(cfg)
    model.load_state_dict(global_state)
    if len(local) == 0:
        return {"val-auc": float("nan"), "val-acc": float("nan"), "val-loss": float("nan"),
                "num-examples": 0}
    m = train.evaluate(model, local)
    return {"val-auc": m["auc"], "val-acc": m["acc"], "val-loss": m["loss"],
            "num-examples": len(local)}
