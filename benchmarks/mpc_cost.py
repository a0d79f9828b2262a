"""Private inference of the PneumoniaMNIST test set vs plaintext, with rounds and bytes.

    PETS_DATA_DIR=... python benchmarks/mpc_cost.py [--n 624] [--batch 128] [--provider TTP]

Prints one table: seconds, images per second, communication rounds and bytes (as CrypTen logs
them, party 0's requests to the trusted dealer included), prediction agreement, and the MPC /
plaintext ratio; then the seconds per image that a link of 1, 10 and 50 ms round trip at
100 Mbit/s would give, predicted from those rounds and bytes (``pets_lite.smpc.network``). Each
party runs on one thread; timings are noisy on a shared machine, the ratio measured in one run is
what to report.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from pets_lite import smpc


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flag", default="pneumoniamnist")
    parser.add_argument("--n", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--provider", default="TTP", choices=["TTP", "TFP"])
    parser.add_argument("--fast", action="store_true", help="use the fast-mode model")
    args = parser.parse_args(argv)

    model, splits, _ = smpc.inference_model(args.flag, fast=args.fast)
    x, y = splits["test"].tensors
    if args.n is not None:
        if args.n < 1:
            parser.error(f"--n must be >= 1, got {args.n}")
        x, y = x[:args.n], y[:args.n]
    private = smpc.private_inference(model, x, batch_size=args.batch, provider=args.provider)
    plain, plain_seconds = smpc.plaintext_inference(model, x, batch_size=args.batch)
    agree = float(np.mean(private["logits"].argmax(1) == plain.argmax(1)))
    table = pd.DataFrame({
        "plaintext": {"seconds": plain_seconds, "cpu seconds": plain_seconds,
                      "images/s": len(x) / plain_seconds, "rounds": 0, "MB exchanged": 0.0,
                      "agreement with plaintext": 1.0},
        "MPC (2 parties)": {"seconds": private["seconds"], "cpu seconds": private["cpu_seconds"],
                            "images/s": len(x) / private["seconds"],
                            "rounds": private["rounds"], "MB exchanged": private["bytes"] / 1e6,
                            "agreement with plaintext": agree},
    }).T
    table["x plaintext time"] = table["seconds"] / plain_seconds
    print(f"{args.flag}: {len(x)} test images, batch {args.batch}, provider {args.provider}, "
          f"largest logit difference {np.abs(private['logits'] - plain).max():.2e}")
    print(table.to_string(float_format=lambda v: f"{v:,.3f}"))
    network = pd.DataFrame(smpc.predict_table(private["seconds"], private["rounds"],
                                              private["bytes"], units=len(x)))
    print("\npredicted on a real link (s per image):")
    print(network.set_index("RTT ms").to_string(float_format=lambda v: f"{v:,.4f}"))
    return table


if __name__ == "__main__":
    main()
