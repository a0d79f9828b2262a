"""One DP-SGD step taken apart, for the chapter's figures: every per-sample gradient (torch.func),
their norms before and after clipping, the norm of the noise, and how far the noisy step points
from the non-private one."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .accounting import check_clip


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each example's full loss gradient, flattened (torch.func): shape (B, parameters)."""
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


def clip_each(grads: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Per-sample gradients (rows of ``grads``) each clipped to norm at most ``max_grad_norm``,
    with Opacus' factor min(1, C / (norm + 1e-6))."""
    check_clip(max_grad_norm)
    return grads * torch.clamp(max_grad_norm / (grads.norm(dim=1) + 1e-6), max=1.0).unsqueeze(1)


def dp_sgd_step_anatomy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        max_grad_norm: float = 1.0, noise_multiplier: float = 1.0,
                        seed: int = 0, expected_batch_size: float | None = None) -> dict:
    """One DP-SGD step taken apart: per-sample norms before/after clipping to C, the norm of the
    clipped sum, the norm of the Gaussian noise N(0, σ²C²I), the noisy step
    (clipped sum + noise) / ``expected_batch_size`` (qN; default the batch's size) and its cosine
    with the non-private mean gradient."""
    g = per_sample_grads(model, x, y)
    norms = g.norm(dim=1)
    clipped = clip_each(g, max_grad_norm)
    noise = torch.randn(g.shape[1], generator=torch.Generator().manual_seed(seed))
    noise = noise * noise_multiplier * max_grad_norm
    noisy = (clipped.sum(0) + noise) / (expected_batch_size or len(y))
    clean = g.mean(0)
    cosine = float(torch.nn.functional.cosine_similarity(noisy, clean, dim=0))
    return {"norms_before": norms.numpy(), "norms_after": clipped.norm(dim=1).numpy(),
            "clipped_fraction": float((norms > max_grad_norm).float().mean()),
            "clipped_sum_norm": float(clipped.sum(0).norm()), "noise_norm": float(noise.norm()),
            "expected_noise_norm": noise_multiplier * max_grad_norm * math.sqrt(g.shape[1]),
            "n_params": int(g.shape[1]), "batch": int(len(y)),
            "max_norm_after": float(clipped.norm(dim=1).max()),
            "cosine_noisy_vs_clean": cosine}


def anatomy_table(anatomies: dict[str, dict]):
    """One row per step of :func:`dp_sgd_step_anatomy` (a pandas DataFrame)."""
    import pandas as pd

    return pd.DataFrame({name: {"median norm": float(np.median(a["norms_before"])),
                                "share clipped": a["clipped_fraction"],
                                "|sum of clipped grads|": a["clipped_sum_norm"],
                                "|noise| (sigma C sqrt(d))": a["noise_norm"],
                                "cosine(noisy, clean)": a["cosine_noisy_vs_clean"]}
                         for name, a in anatomies.items()}).T
