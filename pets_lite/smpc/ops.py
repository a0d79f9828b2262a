"""Where MPC is slow: single operations timed on shares and in the clear, with CrypTen's counts of
communication rounds and bytes."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .. import crypten_compat
from .parties import comm_stats, reset_stats, run_parties


def _op_table(n: int):
    """``name -> (inputs builder, operation)`` for :func:`op_costs`; the same code runs on
    torch tensors (plaintext) and CrypTensors (MPC)."""
    f = torch.nn.functional
    return {
        "add x + y": (lambda a, b, img: (a, b), lambda a, b: a + b),
        "multiply by public 3": (lambda a, b, img: (a, b), lambda a, b: a * 3),
        "multiply x * y": (lambda a, b, img: (a, b), lambda a, b: a * b),
        "matmul (n/64 x 64)(64 x n/64)": (lambda a, b, img: (a.reshape(-1, 64), b.reshape(64, -1)),
                                          lambda a, b: a.matmul(b)),
        "compare x > y": (lambda a, b, img: (a, b), lambda a, b: a > b),
        "ReLU": (lambda a, b, img: (a, b), lambda a, b: a.relu()),
        "avg pool 2x2": (lambda a, b, img: (img, b), lambda a, b: f.avg_pool2d(a, 2)
                         if torch.is_tensor(a) else a.avg_pool2d(2)),
        "max pool 2x2": (lambda a, b, img: (img, b), lambda a, b: f.max_pool2d(a, 2)
                         if torch.is_tensor(a) else a.max_pool2d(2)),
        "exp": (lambda a, b, img: (a, b), lambda a, b: a.exp()),
        "reciprocal 1/x": (lambda a, b, img: (a.abs() + 1, b), lambda a, b: a.reciprocal()),
        "softmax (rows of 2)": (lambda a, b, img: (a.reshape(-1, 2), b), lambda a, b: a.softmax(1)),
    }


def _op_party(rank: int, n: int, repeats: int):
    crypten = crypten_compat.crypten_module()
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    img = torch.rand(n // 64, 1, 8, 8, generator=g)
    rows = []
    for name, (make, op) in _op_table(n).items():
        pa, pb = make(a, b, img)
        ea, eb = crypten.cryptensor(pa, src=0), crypten.cryptensor(pb, src=1)
        times, plain_times = [], []
        reset_stats()
        for _ in range(repeats):
            start = time.perf_counter()
            out = op(ea, eb)
            times.append(time.perf_counter() - start)
        stats = comm_stats()
        for _ in range(repeats):
            start = time.perf_counter()
            expected = op(pa, pb)
            plain_times.append(time.perf_counter() - start)
        error = (out.get_plain_text() - expected.float()).abs()
        rows.append({"operation": name, "mpc_s": float(np.median(times)),
                     "plain_s": float(np.median(plain_times)),
                     "rounds": stats["rounds"] / repeats, "bytes": stats["bytes"] / repeats,
                     "max_abs_error": float(error.max()),
                     "off_by_0.01": int((error > 0.01).sum()), "elements": int(error.numel())})
    return rows


def op_costs(n: int = 4096, repeats: int = 3, provider: str = "TTP") -> list[dict[str, Any]]:
    """Time, rounds and bytes of single MPC operations on ``n`` elements vs the same op in torch.

    One row per operation: ``operation, mpc_s, plain_s, slowdown, rounds, bytes, max_abs_error,
    off_by_0.01`` (how many of ``elements`` outputs missed the plaintext by more than 0.01)
    (rounds and bytes as in :func:`pets_lite.smpc.parties.total_stats`: CrypTen's logs, party
    0's dealer requests included).
    """
    if n < 64 or n % 64:
        raise ValueError(f"n must be a positive multiple of 64, got {n}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    values = run_parties(_op_party, args=(n, repeats), provider=provider)
    rows = []
    for r0, r1 in zip(*values):
        rows.append({**r0, "mpc_s": max(r0["mpc_s"], r1["mpc_s"]),
                     "slowdown": max(r0["mpc_s"], r1["mpc_s"]) / max(r0["plain_s"], 1e-7),
                     "rounds": max(r0["rounds"], r1["rounds"]),
                     "bytes": (r0["bytes"] + r1["bytes"]) / 2})
    return rows

