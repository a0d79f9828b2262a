"""Round time and bytes of FedAvg vs FedAvg + SecAgg+ (Flower 1.42, legacy API), side by side.

For each number of hospitals, ONE simulation runs plain FedAvg and SecAgg+ rounds alternately
over the same hospitals and model, so both see the same machine load; it prints the medians and
the SecAgg+/plain ratios. Usage: python benchmarks/secagg_overhead.py [--clients 3 5 10]
[--rounds 3] [--batch 8] [--steps 1] [--model mlp]

Bytes are Flower's serialised messages (what a deployment sends). With the defaults a round is
almost all protocol: one SGD step on 8 images per hospital, so the ratio is SecAgg+'s four message
rounds against FedAvg's one. ``--batch 64 --steps 50`` gives each hospital real local training per
round, the setting in which a deployment would pay the overhead.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from pets_lite import data
from pets_lite import inversion as inv
from pets_lite.fl import secagg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per mode (alternated)")
    ap.add_argument("--batch", type=int, default=8, help="images per hospital")
    ap.add_argument("--steps", type=int, default=1, help="local SGD steps per round")
    ap.add_argument("--model", default="mlp", help="pets_lite.inversion.InversionNet kind")
    ap.add_argument("--flag", default="pneumoniamnist")
    args = ap.parse_args()
    x, y = data.load(args.flag, "train", size=max(args.clients) * args.batch, seed=0).tensors
    print(f"{args.batch} images and {args.steps} local step(s) per hospital per round, "
          f"model {args.model!r}")
    print(f"{'clients':>7} {'plain s':>8} {'secagg s':>9} {'time x':>7} "
          f"{'plain MB':>9} {'secagg MB':>10} {'bytes x':>8}")
    for n in args.clients:
        step = inv.ClientStep(x[: n * args.batch].reshape(n, args.batch, *x.shape[1:]),
                              y[: n * args.batch].reshape(n, args.batch), kind=args.model,
                              steps=args.steps)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            initial = secagg.model_parameters(inv.InversionNet(kind=args.model))
        # An unmeasured first round: Ray starts its client actors (~30 s on a loaded machine).
        exps = [secagg.Experiment("warm-up", secure=False)] + [
                secagg.Experiment(f"{mode}{i}", secure=(mode == "sec"))
                for i in range(args.rounds) for mode in ("plain", "sec")]
        res = secagg.simulate(step, initial, n, exps)
        res.pop("warm-up")
        plain = [r for r in res.values() if not r.secure]
        sec = [r for r in res.values() if r.secure]
        tp = statistics.median(r.round_seconds[0] for r in plain)
        ts = statistics.median(r.round_seconds[0] for r in sec)
        bp = statistics.median(r.bytes_total for r in plain) / 1e6
        bs = statistics.median(r.bytes_total for r in sec) / 1e6
        print(f"{n:>7} {tp:>8.2f} {ts:>9.2f} {ts / tp:>7.2f} {bp:>9.3f} {bs:>10.3f} "
              f"{bs / bp:>8.2f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
