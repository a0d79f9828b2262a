"""Scenario 2: private training of one model on two hospitals' secret-shared data, beside the same
training in the clear (same initialisation, batches, learning rate and epochs)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from .. import config, crypten_compat
from .parties import check_images, comm_stats, reset_stats, run_parties, total_stats


def training_net(image_size: int = 28, hidden: int = 32) -> nn.Module:
    """The jointly trained model: 2x2 average pooling, then a one-hidden-layer ReLU MLP, one logit.

    Small on purpose: every multiplication and ReLU of every step runs under MPC.
    """
    features = (image_size // 2) ** 2
    return nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


def initial_net(image_size: int, seed: int) -> nn.Module:
    """:func:`training_net` with the initial weights both hospitals derive from the public seed."""
    with config.seeded(config.derive_seed(seed, "smpc", "initial weights")):
        return training_net(image_size)


def split_hospitals(dataset, fraction: float = 0.5, seed: int = 0):
    """Split a TensorDataset into two disjoint hospitals (seeded), ``fraction`` to the first."""
    from torch.utils.data import TensorDataset

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    x, y = dataset.tensors
    if len(x) < 2:
        raise ValueError(f"need at least 2 examples to split, got {len(x)}")
    g = torch.Generator().manual_seed(config.derive_seed(seed, "smpc", "hospital split"))
    perm = torch.randperm(len(x), generator=g)
    cut = min(max(1, int(round(fraction * len(x)))), len(x) - 1)
    return TensorDataset(x[perm[:cut]], y[perm[:cut]]), TensorDataset(x[perm[cut:]], y[perm[cut:]])


def _batches(n: int, epochs: int, batch_size: int, seed: int):
    """The public schedule: a seeded permutation per epoch, cut into batches."""
    g = torch.Generator().manual_seed(config.derive_seed(seed, "smpc", "batches"))
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            yield perm[i:i + batch_size]


def _training_party(rank: int, hospitals, epochs: int, batch_size: int, lr: float, seed: int):
    crypten = crypten_compat.crypten_module()
    init = initial_net(hospitals[0][0].shape[-1], seed)  # public: both derive it from the seed
    shape = hospitals[0][0].shape[1:]
    secret_model = crypten.nn.from_pytorch(init, torch.zeros(1, *shape)).encrypt(src=0)
    secret_model.train()
    xs, ys = [], []
    for owner, (x, y) in enumerate(hospitals):  # each shares its own data; sizes are public
        mine = rank == owner
        xs.append(crypten.cryptensor(x if mine else torch.zeros_like(x), src=owner))
        ys.append(crypten.cryptensor(y.float().unsqueeze(1) if mine else torch.zeros(len(y), 1),
                                     src=owner))
    X, Y = crypten.cat(xs), crypten.cat(ys)
    loss_fn = crypten.nn.BCEWithLogitsLoss(skip_forward=True)  # backward needs sigmoid only
    reset_stats()
    start = time.perf_counter()
    steps = 0
    for idx in _batches(X.size(0), epochs, batch_size, seed):
        loss = loss_fn(secret_model(X[idx]), Y[idx])
        secret_model.zero_grad()
        loss.backward()
        secret_model.update_parameters(lr)
        steps += 1
    seconds = time.perf_counter() - start
    # Both hospitals jointly own the result: open the weights to both at the end.
    weights = [p.get_plain_text() for p in secret_model.parameters()]
    return {"weights": weights, "seconds": seconds, "steps": steps, "stats": comm_stats()}


def _hospital_tensors(hospital_a, hospital_b):
    out = []
    for name, ds in (("hospital_a", hospital_a), ("hospital_b", hospital_b)):
        tensors = getattr(ds, "tensors", None)
        if tensors is None or len(tensors) != 2 or len(tensors[0]) == 0:
            raise ValueError(f"{name} must be a non-empty TensorDataset(images, labels)")
        out.append((check_images(tensors[0]), tensors[1].long()))
    if out[0][0].shape[1:] != out[1][0].shape[1:]:
        raise ValueError(f"the hospitals' images differ in shape: {tuple(out[0][0].shape[1:])} vs "
                         f"{tuple(out[1][0].shape[1:])}")
    return out


def private_training(hospital_a, hospital_b, epochs: int = 2, batch_size: int = 128,
                     lr: float = 0.5, seed: int = 0, provider: str = "TTP",
                     timeout: float = 900) -> dict[str, Any]:
    """Train :func:`training_net` with SGD on the union of two hospitals' secret-shared data.

    Hospital A (party 0) and B (party 1) each secret-share their images and labels; forward,
    backward and update run on shares; the weights are opened at the end. Returns ``{"model"
    (torch, with the trained weights), "seconds", "steps", "rounds", "bytes", "comm_seconds"}``.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, "
                         f"{batch_size}, {lr}")
    hospitals = _hospital_tensors(hospital_a, hospital_b)
    values = run_parties(_training_party, args=(hospitals, epochs, batch_size, lr, seed),
                         provider=provider, timeout=timeout)
    model = training_net(hospitals[0][0].shape[-1])
    with torch.no_grad():
        for p, w in zip(model.parameters(), values[0]["weights"]):
            p.copy_(w.reshape(p.shape))
    return {"model": model.eval(), "seconds": max(v["seconds"] for v in values),
            "steps": values[0]["steps"], **total_stats([v["stats"] for v in values])}


def plaintext_training(hospital_a, hospital_b, epochs: int = 2, batch_size: int = 128,
                       lr: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """:func:`private_training`'s training (same init, batches, SGD) on pooled cleartext."""
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, "
                         f"{batch_size}, {lr}")
    (xa, ya), (xb, yb) = _hospital_tensors(hospital_a, hospital_b)
    X, Y = torch.cat([xa, xb]), torch.cat([ya, yb]).float().unsqueeze(1)
    model = initial_net(X.shape[-1], seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    start, steps = time.perf_counter(), 0
    for idx in _batches(len(X), epochs, batch_size, seed):
        optimizer.zero_grad()
        loss_fn(model(X[idx]), Y[idx]).backward()
        optimizer.step()
        steps += 1
    return {"model": model.eval(), "seconds": time.perf_counter() - start, "steps": steps}


@torch.no_grad()
def binary_auc(model: nn.Module, dataset) -> float:
    """Test ROC AUC of a one-logit model on a TensorDataset."""
    from .. import metrics

    x, y = dataset.tensors
    with torch.no_grad():
        return metrics.auc_score(y.numpy(), model.eval()(x.float()).squeeze(1).numpy())
