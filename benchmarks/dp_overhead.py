"""What does DP-SGD cost per epoch? Times one epoch of the same model on the same data without DP and
with Opacus' three ways of getting per-sample gradient norms (hooks, functorch, ghost clipping),
alternating the modes round after round so that a noisy, shared machine slows them all alike, and
prints each mode's ratio to the non-private epoch of the same round.

    PETS_DATA_DIR=... python benchmarks/dp_overhead.py [--n 2048] [--batch-size 256] [--rounds 3]

The ratios are the result; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from pets_lite import config, data, dp

MODES = ("non-private", "hooks", "functorch", "ghost")


def epoch_seconds(mode: str, dataset, batch_size: int, width: int, seed: int = 0) -> float:
    """Seconds for one training epoch of the DP recipe's CNN in ``mode`` (model set-up excluded)."""
    from opacus import PrivacyEngine

    device = config.device()
    torch.manual_seed(seed)
    model = dp.dp_cnn(width=width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    criterion = nn.CrossEntropyLoss()
    if mode != "non-private":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = PrivacyEngine(accountant="rdp").make_private(
                module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
                noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)
        model, optimizer, *rest = out
        criterion, loader = (rest[0], rest[1]) if mode == "ghost" else (criterion, rest[0])
    model.train()
    _sync(device)
    start = time.perf_counter()
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
    """Wait for queued GPU work, so the timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict[str, list[float]]:
    """Run the alternating benchmark and print per-mode seconds and ratios to non-private."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flag", default="pneumoniamnist")
    parser.add_argument("--n", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=dp.DP_RECIPE["width"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    warnings.filterwarnings("ignore", message=".*Full backward hook.*")  # once per step otherwise
    if modes[0] != "non-private":
        parser.error("--modes must start with non-private (the reference)")
    config.seed_everything(0)
    train = data.load(args.flag, "train", size=args.n)
    print(f"{args.flag}: {len(train)} images, batch {args.batch_size}, SmallCNN width {args.width} "
          f"(GroupNorm), {args.rounds} rounds, device {config.device()}, "
          f"{torch.get_num_threads()} CPU threads")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in config.progress(range(args.rounds), desc="rounds"):
        order = modes if r % 2 == 0 else [modes[0]] + modes[:0:-1]  # alternate the DP modes' order
        for mode in order:
            times[mode].append(epoch_seconds(mode, train, args.batch_size, args.width, seed=r))
    base = np.array(times["non-private"])
    print(f"{'mode':<12} {'median s':>9} {'ratio median':>13} {'ratio range':>16}")
    for mode in modes:
        ratios = np.array(times[mode]) / base
        print(f"{mode:<12} {np.median(times[mode]):9.2f} {np.median(ratios):13.2f} "
              f"{ratios.min():7.2f}-{ratios.max():<7.2f}")
    return times


if __name__ == "__main__":
    main()
