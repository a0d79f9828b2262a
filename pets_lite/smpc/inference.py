"""Scenario 1: private inference. The model owner (party 0) shares the weights, the hospital
(party 1) the images; CrypTen evaluates the CNN on shares and opens the logits to the hospital."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import crypten_compat
from ..recipes import Recipe, cached_model
from .parties import (
    HOSPITAL,
    OWNER,
    check_images,
    comm_stats,
    reset_stats,
    run_parties,
    total_stats,
)


@dataclass(frozen=True)
class MPCRecipe(Recipe):
    """The model owner's CNN for private inference and its plaintext training.

    The MPC-friendly member of the SmallCNN family: narrow; BatchNorm, which the owner folds into
    the convolutions before sharing (GroupNorm would need a division and a square root per sample
    under MPC); average pooling (linear; max pooling needs comparisons); ReLU."""

    width: int = 4
    depth: int = 2
    norm: str = "batch"
    pool: str = "avg"
    activation: str = "relu"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3

    FAST = {"epochs": 6}

    def problems(self) -> list[str]:
        return super().problems() + self.only_at_28() + self.positive(
            "width", "depth", "epochs", "batch_size", "lr")

    def architecture(self) -> dict:
        """The SmallCNN keyword arguments of this recipe."""
        return {"width": self.width, "depth": self.depth, "norm": self.norm, "pool": self.pool,
                "activation": self.activation}


#: The recipe of chapter 06's private-inference model (full mode).
MPC_RECIPE = MPCRecipe()


def inference_model(flag: str | None = None, seed: int | None = None, fast: bool | None = None,
                    progress: bool = True, recipe: MPCRecipe = MPC_RECIPE, **changes):
    """The model owner's CNN (:data:`MPC_RECIPE`), trained in plaintext once and cached.

    Returns ``(model, splits, results)`` with ``results["history"]`` from
    :func:`pets_lite.train.fit`.
    """
    from .. import data, models, train

    given = {k: v for k, v in (("flag", flag), ("seed", seed)) if v is not None}
    recipe = recipe.variant(fast).replace(**given, **changes)
    meta = data.info(recipe.flag)
    splits = data.load_splits(recipe.flag, fast=recipe.fast, seed=recipe.seed)

    def build():
        return models.SmallCNN(in_channels=meta.n_channels, n_classes=meta.n_classes,
                               **recipe.architecture())

    def train_fn(model):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny net: one thread is several times faster on a busy machine
        try:
            history = train.fit(model, splits["train"], splits["val"], epochs=recipe.epochs,
                                lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed,
                                progress=progress, desc="model owner trains (plaintext)")
        finally:
            torch.set_num_threads(threads)
        return {"history": vars(history)}

    model, results, _ = cached_model("smpc_cnn", recipe, build, train_fn)
    model.eval()
    return model, splits, results


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every Conv2d -> BatchNorm2d pair fused into one Conv2d.

    At inference BatchNorm is an affine map per channel, so it folds into the convolution's weights
    and bias: the model computes the same function with no normalisation layer left to run in MPC.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module)
            for i in range(len(children) - 1):
                conv, bn = children[i], children[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return model


def _inference_party(rank: int, model: nn.Module, images: torch.Tensor, batch_size: int):
    """One party of :func:`private_inference`: each touches only its own input."""
    crypten = crypten_compat.crypten_module()
    local = fold_batchnorm(model)
    if rank != OWNER:  # the hospital knows the architecture only: it holds no weights
        for p in local.parameters():
            p.data.zero_()
    dummy = torch.zeros(1, *images.shape[1:])
    reset_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    secret_model = crypten.nn.from_pytorch(local, dummy).encrypt(src=OWNER)
    secret_model.eval()
    own = images if rank == HOSPITAL else torch.zeros_like(images)  # the shape is public
    outputs = []
    for i in range(0, len(images), batch_size):
        x = crypten.cryptensor(own[i:i + batch_size], src=HOSPITAL)
        outputs.append(secret_model(x).get_plain_text(dst=HOSPITAL))  # only the hospital decrypts
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # Each party reports what get_plain_text left it with (the logits at the hospital, None at
    # the owner), so that the caller checks who learned the output instead of assuming it.
    view = None if any(o is None for o in outputs) else torch.cat(outputs).numpy()
    return {"view": view, "seconds": seconds, "cpu_seconds": cpu, "stats": comm_stats()}


def private_inference(model: nn.Module, images: torch.Tensor, batch_size: int = 64,
                      provider: str = "TTP", timeout: float = 600) -> dict[str, Any]:
    """Classify ``images`` with ``model`` under 2-party MPC; only the hospital learns the logits.

    Party 0 (model owner) secret-shares the weights, party 1 (hospital) the images; CrypTen
    evaluates the network on shares and opens the output to party 1 alone. Returns ``{"logits"
    (N, C) as the hospital decrypted them, "seconds" (slowest party, wall clock), "cpu_seconds"
    (the busiest party's CPU time: what it needs of a core of its own), "rounds", "bytes",
    "comm_seconds", "owner_saw_output" (whether party 0 was left with values that match the
    logits to within 0.05: False when the output is opened to the hospital alone)}``.
    """
    images = check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    values = run_parties(_inference_party, args=(model, images, batch_size), provider=provider,
                         timeout=timeout)
    logits, owner_view = values[HOSPITAL]["view"], values[OWNER]["view"]
    return {"logits": logits, "seconds": max(v["seconds"] for v in values),
            "cpu_seconds": max(v["cpu_seconds"] for v in values),
            **total_stats([v["stats"] for v in values]),
            "owner_saw_output": owner_view is not None and bool(np.allclose(owner_view, logits,
                                                                             atol=0.05))}


@torch.no_grad()
def plaintext_inference(model: nn.Module, images: torch.Tensor,
                        batch_size: int = 64) -> tuple[np.ndarray, float]:
    """``(logits, seconds)`` of the same model in the clear, batch by batch, on one thread."""
    images = check_images(images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, like each party
    try:
        model.eval()
        start = time.perf_counter()
        logits = torch.cat([model(images[i:i + batch_size])
                            for i in range(0, len(images), batch_size)])
        return logits.numpy(), time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
