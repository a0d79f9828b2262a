#!/usr/bin/env python
"""The validation-split searches behind two recipes: chapter 02's DP-SGD and chapter 05's x^2 model.

    python benchmarks/recipe_search.py dp --epsilon 8       # DP-SGD grid at epsilon = 8
    python benchmarks/recipe_search.py he                   # x^2 (HEConvNet) grid, plaintext
    python benchmarks/recipe_search.py dp --fast            # the fast-mode (1,200 images) grid

Every setting is selected on the *validation* AUC; the test AUC is printed beside it only so a
reader can see how well validation predicts it (never choose on it). One seed per setting unless
``--seeds`` says otherwise. On two CPU cores the DP grid takes tens of minutes; on a GPU (the
library picks CUDA when torch sees one) about two minutes.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings

from pets_lite import config, data, train

DP_GRID = {"epochs": (3, 10, 20),
           "batch_lr": ((256, 2e-3), (256, 5e-3), (512, 5e-3), (1024, 1e-2)),
           "width": (16, 32)}
DP_FAST_GRID = {"epochs": (3, 5), "batch_lr": ((128, 2e-3), (64, 5e-3), (128, 5e-3)),
                "width": (16,)}
HE_GRID = {"channels_hidden": ((8, 32), (16, 32), (8, 64), (16, 64), (32, 64)), "lr": (1e-3, 3e-3),
           "epochs": (30,)}


def search_dp(epsilon: float, fast: bool, seeds: list[int]) -> list[dict]:
    from pets_lite import dp

    grid = DP_FAST_GRID if fast else DP_GRID
    splits = data.load_splits("pneumoniamnist", fast=fast, seed=0)
    rows = []
    for epochs, (batch, lr), width in itertools.product(*grid.values()):
        for seed in seeds:
            with config.seeded(seed):
                model = dp.dp_cnn(1, 2, width, dp.DP_RECIPE.depth)
            start = time.perf_counter()
            result = dp.train_dp(model, splits["train"], splits["val"], epsilon=epsilon,
                                 epochs=epochs, batch_size=batch, lr=lr, seed=seed, progress=False)
            rows.append({"epochs": epochs, "batch": batch, "lr": lr, "width": width, "seed": seed,
                         "sigma": result.noise_multiplier, "val_auc": result.history.best_val_auc,
                         "test_auc": train.evaluate(model, splits["test"])["auc"],
                         "seconds": time.perf_counter() - start})
            print(_fmt(rows[-1]), flush=True)
    return rows


def search_he(fast: bool, seeds: list[int]) -> list[dict]:
    from pets_lite import he

    splits = data.load_splits("pneumoniamnist", fast=fast, seed=0)
    rows = []
    for (channels, hidden), lr, epochs in itertools.product(*HE_GRID.values()):
        for seed in seeds:
            with config.seeded(seed):
                model = he.HEConvNet(channels=channels, hidden=hidden)
            start = time.perf_counter()
            hist = train.fit(model, splits["train"], splits["val"], epochs=epochs, lr=lr,
                             batch_size=64, seed=seed, progress=False)
            rows.append({"channels": channels, "hidden": hidden, "lr": lr, "epochs": epochs,
                         "seed": seed, "val_auc": hist.best_val_auc,
                         "test_auc": train.evaluate(model, splits["test"])["auc"],
                         "seconds": time.perf_counter() - start})
            print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(row: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("dp", "he"))
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--fast", action="store_true", help="the 1,200-image fast-mode subset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="opacus")
    print(f"device {config.device()}, {'fast' if args.fast else 'full'} mode", flush=True)
    rows = (search_dp(args.epsilon, args.fast, args.seeds) if args.what == "dp"
            else search_he(args.fast, args.seeds))
    best = max(rows, key=lambda r: r["val_auc"])
    print("\nselected on validation AUC:", _fmt(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
