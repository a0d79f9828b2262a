"""What does DP-SGD cost per epoch? Times one epoch of the same model on the same data without DP
and with each way of clipping per-sample gradients: book-keeping ("bk", pets_lite.clipping, one
backward pass; the default) and Opacus' ghost clipping (two backward passes), hooks and
functorch. The modes alternate round after round, after one unmeasured warm-up epoch each, so that
a noisy, shared machine slows them all alike; each mode's ratio is to the non-private epoch of the
same round.

    PETS_DATA_DIR=... python benchmarks/dp_overhead.py [--n 4708] [--batch-size 256] [--rounds 5]

The ratios are the result; absolute seconds depend on the machine and its load. The target the
default path is held to: at most 1.5x the non-private epoch (full training split, batch 256).
"""

from __future__ import annotations

import argparse
import warnings

import torch

from pets_lite import config, data, dp

MODES = dp.OVERHEAD_MODES
TARGET = 1.5


def main(argv=None) -> dict[str, list[float]]:
    """Run the alternating benchmark and print per-mode seconds and ratios to non-private."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flag", default="pneumoniamnist")
    parser.add_argument("--n", type=int, default=None,
                        help="training images per epoch (default: all)")
    parser.add_argument("--batch-size", type=int, default=dp.DP_RECIPE.batch_size)
    parser.add_argument("--width", type=int, default=dp.DP_RECIPE.width)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--no-warmup", action="store_true",
                        help="time the first epoch of each mode too")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if modes[0] != "non-private":
        parser.error("--modes must start with non-private (the reference)")
    warnings.filterwarnings("ignore", module="opacus")
    config.seed_everything(0)
    train = data.load(args.flag, "train", fast=False, size=args.n)
    default = dp.grad_sample_mode_for(dp.dp_cnn(width=args.width))
    warm = "" if args.no_warmup else " after a warm-up epoch per mode"
    print(f"{args.flag}: {len(train)} images, batch {args.batch_size}, SmallCNN width {args.width} "
          f"(GroupNorm), {args.rounds} rounds{warm}, device {config.device()}, "
          f"{torch.get_num_threads()} CPU threads; default path: auto -> {default}")
    times = dp.overhead(train, modes, rounds=args.rounds, batch_size=args.batch_size,
                        width=args.width, warmup=not args.no_warmup)
    print(f"{'mode':<12} {'median s':>9} {'ratio median':>13} {'ratio range':>16}")
    rows = dp.overhead_summary(times)
    for row in rows:
        mark = "  <- default" if row["mode"] == default else ""
        print(f"{row['mode']:<12} {row['median_s']:9.2f} {row['ratio']:13.2f} "
              f"{row['ratio_min']:7.2f}-{row['ratio_max']:<7.2f}{mark}")
    if default in times:
        ratio = next(r["ratio"] for r in rows if r["mode"] == default)
        print(f"default path ({default}): {ratio:.2f}x the non-private epoch "
              f"(target <= {TARGET}x: {'met' if ratio <= TARGET else 'missed'})")
    return times


if __name__ == "__main__":
    main()
