"""Checks that the DP-SGD step really does what the accountant assumes, measured on the real
optimiser (the code :func:`pets_lite.dp.train_dp` runs), not on a re-implementation.

The accountant's ε holds only if every step (1) samples each example independently with
probability q (Poisson sampling), (2) clips each example's gradient to norm C, and (3) adds
Gaussian noise of std σC to the clipped sum, then divides by the expected batch size qN. So the
noise on the averaged gradient that reaches Adam must have std σC / (qN):

* :func:`noise_check` takes one step on a batch twice from the same weights, with σ and with
  σ = 0: the difference is exactly the noise the optimiser added; the σ = 0 gradient must equal the
  clipped mean of the batch's per-sample gradients computed independently by ``torch.func``;
* :func:`sampling_check` draws the real loader's batches and compares their sizes, and how often
  each example is drawn, with Poisson sampling's binomial laws (a shuffled loader has constant
  batches and draws every example once an epoch).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .anatomy import clip_each, per_sample_grads
from .training import private_training


def optimizer_gradient(model: nn.Module, train_set: Dataset, x: torch.Tensor, y: torch.Tensor,
                       **setup) -> tuple[torch.Tensor, float, str]:
    """The gradient that DP-SGD hands to Adam after one step on ``(x, y)``, flattened in
    parameter order, for a copy of ``model`` (``model`` is left as it was); with the optimiser's
    expected batch size and the engine. ``setup``: the keywords of
    :func:`pets_lite.dp.private_training`."""
    model = copy.deepcopy(model)
    run = private_training(model, train_set, **setup)
    seen = []
    inner = run.optimizer.original_optimizer

    def capture(optimizer, args, kwargs):
        seen.append(torch.cat([p.grad.detach().flatten().cpu().clone()
                               for group in optimizer.param_groups for p in group["params"]]))

    handle = inner.register_step_pre_hook(capture)
    try:
        run.module.train()
        device = next(model.parameters()).device
        run.step(x.to(device), y.to(device))
    finally:
        handle.remove()
        run.close()
    if len(seen) != 1:
        raise RuntimeError(f"the DP optimiser called Adam {len(seen)} times for one step")
    return seen[0], float(run.optimizer.expected_batch_size), run.mode


def noise_check(model: nn.Module, train_set: Dataset, x: torch.Tensor, y: torch.Tensor, *,
                noise_multiplier: float, max_grad_norm: float, batch_size: int,
                grad_sample_mode: str = "auto", seed: int = 0) -> dict:
    """Measure the noise and the clipping of one real DP-SGD step on the batch ``(x, y)``.

    Returns ``noise_std`` (measured on the averaged gradient), ``expected_std`` = σC / (qN) with
    q = 1 / ceil(N / ``batch_size``) computed here, their ``std_ratio``, the ``effective_sigma``
    (measured std x the optimiser's expected batch size / C: what the accountant must be told),
    ``noise_mean`` (in units of ``expected_std``), the Kolmogorov-Smirnov p-value of the
    standardised noise against N(0, 1), ``clip_error`` (relative distance of the σ = 0 gradient
    from the independently clipped mean), ``max_norm`` and ``clipped_fraction`` of the batch's
    per-sample gradients, and the engine ``mode``.
    """
    from scipy.stats import kstest

    from .accounting import sampling

    setup = dict(batch_size=batch_size, max_grad_norm=max_grad_norm,
                 grad_sample_mode=grad_sample_mode, seed=seed)
    noisy, expected_batch, mode = optimizer_gradient(model, train_set, x, y,
                                                     noise_multiplier=noise_multiplier, **setup)
    clean, _, _ = optimizer_gradient(model, train_set, x, y, noise_multiplier=0.0, **setup)
    q, _ = sampling(len(train_set), batch_size)
    expected_std = noise_multiplier * max_grad_norm / (q * len(train_set))
    noise = (noisy - clean).double()
    grads = per_sample_grads(model, x, y)
    reference = clip_each(grads, max_grad_norm).sum(0) / expected_batch
    norms = grads.norm(dim=1)
    out = {"noise_std": float(noise.std()), "expected_std": float(expected_std),
           "effective_sigma": float(noise.std()) * expected_batch / max_grad_norm,
           "noise_multiplier": float(noise_multiplier), "expected_batch_size": expected_batch,
           "qN": q * len(train_set), "n_params": int(noise.numel()), "mode": mode,
           "clip_error": float((clean - reference).norm() / reference.norm()),
           "max_norm": float(norms.max()),
           "clipped_fraction": float((norms > max_grad_norm).float().mean())}
    if expected_std > 0:
        z = (noise / expected_std).numpy()
        out.update(std_ratio=out["noise_std"] / expected_std, noise_mean=float(z.mean()),
                   ks_pvalue=float(kstest(z, "norm").pvalue))
    return out


def sampling_check(model: nn.Module, train_set: Dataset, *, batch_size: int, epochs: int = 5,
                   grad_sample_mode: str = "auto", seed: int = 0) -> dict:
    """Draw ``epochs`` epochs of batch indices from the loader DP-SGD trains with (no data is
    loaded) and compare them with Poisson sampling at q = 1 / ceil(N / ``batch_size``): the batch
    sizes' mean (qN) and variance (Nq(1-q)), and the variance over examples of how often each was
    drawn (S q (1-q) over S steps). Ratios near 1 for Poisson sampling; a shuffled loader gives
    a variance ratio near 0 on both counts."""
    from .accounting import sampling

    run = private_training(copy.deepcopy(model), train_set, noise_multiplier=1.0,
                           batch_size=batch_size, grad_sample_mode=grad_sample_mode, seed=seed)
    run.close()
    n = len(train_set)
    q, _ = sampling(n, batch_size)
    counts = np.zeros(n)
    sizes = []
    for _ in range(epochs):
        for indices in run.loader.batch_sampler:
            indices = np.asarray(list(indices), dtype=int)
            sizes.append(len(indices))
            np.add.at(counts, indices, 1)
    sizes = np.asarray(sizes, float)
    steps = len(sizes)
    return {"steps": steps, "mean_batch": float(sizes.mean()), "expected_batch": q * n,
            "batch_var_ratio": float(sizes.var(ddof=1) / (n * q * (1 - q))),
            "count_var_ratio": float(counts.var(ddof=1) / (steps * q * (1 - q))),
            "empty_batches": int((sizes == 0).sum()), "sample_rate": q}
