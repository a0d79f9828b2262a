#!/usr/bin/env python
"""Encrypted inference: TenSEAL's tutorial path vs the batched (SIMD across the batch) path.

Both paths run the same cached x^2 model (chapter 05) on the first images of the PneumoniaMNIST
test split, side by side in one process; the script prints seconds per image for each path (CPU
seconds too, which a busy machine distorts less than wall-clock time) and the ratio.

    PETS_DATA_DIR=... python benchmarks/he_inference.py --tutorial 2 --batched 624
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pets_lite import config, he


def timed_run(model, images, packing: str) -> tuple[dict, float]:
    """``he.run_path`` plus the process CPU seconds it used."""
    cpu = time.process_time()
    run = he.run_path(model, images, packing, progress=False)
    return run, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tutorial", type=int, default=2, help="images through the tutorial path")
    parser.add_argument("--batched", type=int, default=624, help="images through the batched path")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--fast", action="store_true", help="the fast-mode model (1,200 images)")
    args = parser.parse_args()
    if args.tutorial < 1 or args.batched < 1:
        parser.error("--tutorial and --batched must be at least 1")

    config.seed_everything(0)
    model, splits, _ = he.he_model(fast=args.fast, channels=args.channels, hidden=args.hidden,
                                   progress=False)
    x = splits["test"].tensors[0]
    if args.batched > len(x) or args.tutorial > len(x):
        parser.error(f"the test split has {len(x)} images")
    with torch.no_grad():
        plain = model(x[:max(args.tutorial, args.batched)]).numpy()

    rows = []
    for packing, n in (("tutorial", args.tutorial), ("batched", args.batched)):
        run, cpu = timed_run(model, x[:n], packing)
        s = run["seconds"]
        per_image = (s["encrypt"] + s["evaluate"] + s["decrypt"]) / n
        rows.append((packing, n, per_image, cpu / n, run["bytes"]["public_context"] / 2**20,
                     float(np.abs(run["logits"] - plain[:n]).max())))
    print(f"{'path':<9} {'images':>6} {'wall s/img':>11} {'cpu s/img':>10} {'public ctx MiB':>15} "
          f"{'max |dlogit|':>13}")
    for packing, n, per_image, cpu, mib, diff in rows:
        print(f"{packing:<9} {n:>6} {per_image:>11.4f} {cpu:>10.4f} {mib:>15.1f} {diff:>13.2e}")
    ratio_wall = rows[0][2] / rows[1][2]
    ratio_cpu = rows[0][3] / rows[1][3]
    print(f"speed-up of the batched path, images per second: {ratio_wall:.1f}x wall-clock, "
          f"{ratio_cpu:.1f}x CPU time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
