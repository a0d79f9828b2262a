"""What DP-SGD costs in time: one epoch of the recipe's CNN without DP and with each clipping
engine, measured side by side (``benchmarks/dp_overhead.py`` and the chapter's figure)."""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .. import config, train
from .accounting import DPConfigError
from .readiness import GRAD_SAMPLE_MODES
from .training import dp_cnn, private_training

#: The engines the overhead measurement compares; the first is the reference.
OVERHEAD_MODES = ("non-private", "bk", "ghost", "hooks", "functorch")


def epoch_seconds(mode: str, dataset: Dataset, batch_size: int = 256, width: int | None = None,
                  seed: int = 0) -> float:
    """Seconds for one training epoch of the DP recipe's CNN on ``dataset``: ``"non-private"``
    (plain Adam, shuffled batches) or DP-SGD with one of :data:`GRAD_SAMPLE_MODES` (σ = 1, C = 1,
    Poisson batches of the same expected size, :func:`pets_lite.dp.private_training`). Model and
    engine set-up are not timed."""
    device = config.device()
    x0, _ = dataset[0]
    with config.seeded(seed):
        model = dp_cnn(in_channels=x0.shape[0], width=width).to(device)
    if mode == "non-private":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = train.loader(dataset, batch_size, shuffle=True, seed=seed)
        run = None
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = private_training(model, dataset, noise_multiplier=1.0, batch_size=batch_size,
                                   lr=1e-3, max_grad_norm=1.0, grad_sample_mode=mode, seed=seed)
        loader = run.loader
    model.train()
    _sync(device)
    start = time.perf_counter()
    with warnings.catch_warnings(), config.seeded(seed):
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")  # once per step
        for x, y in loader:
            if len(y) == 0:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if run is not None:
                run.step(x, y)
                continue
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - start
    if run is not None:
        run.close()
    return seconds


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def overhead(dataset: Dataset, modes=OVERHEAD_MODES, rounds: int = 3, batch_size: int = 256,
             width: int | None = None, warmup: bool = True,
             progress: bool = True) -> dict[str, list[float]]:
    """Epoch seconds per mode, measured side by side: each round times one epoch in every mode
    (the DP modes in alternating order, so that a busy machine slows them all alike), after one
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
