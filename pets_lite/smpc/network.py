"""What a real network would add to a measured MPC run: a prediction from its rounds and bytes.

The parties of :func:`pets_lite.smpc.run_parties` meet on 127.0.0.1, where a round trip takes
microseconds. Between two hospitals each communication round waits for the other party's message
and every byte crosses a link of finite bandwidth. From the rounds and bytes CrypTen counted and
the seconds measured on loopback (taken as the computation), :func:`predict_seconds` bounds the
time on a link of a given round-trip time (RTT) and bandwidth:

* low:  compute + rounds x RTT / 2 + (bytes / 2) x 8 / bandwidth
  (each round a one-way delay, both directions of a full-duplex link busy at once);
* high: compute + rounds x RTT + bytes x 8 / bandwidth
  (each round a full round trip, e.g. a request to the dealer, and one direction at a time).

CrypTen's round count is the number of communication calls of the busiest party (its dealer
requests included), so "rounds" is an upper bound on the protocol's sequential depth.

Hook for the deployment work (parties in separate network namespaces behind a delaying relay,
``pets_lite.net``): run the same job there and call :func:`check_prediction` with the measured
seconds and this module's prediction for that link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """A network link: round-trip time (seconds) and bandwidth (bits per second, each way)."""

    rtt_s: float
    bandwidth_bps: float

    def __post_init__(self):
        for name in ("rtt_s", "bandwidth_bps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                    value) or value < 0 or (name == "bandwidth_bps" and value == 0):
                raise ValueError(f"{name} must be a finite non-negative number (bandwidth > 0), "
                                 f"got {value!r}")

    @classmethod
    def of(cls, rtt_ms: float, mbit_s: float) -> Link:
        """A link from milliseconds and megabits (10^6 bits) per second."""
        return cls(rtt_ms / 1e3, mbit_s * 1e6)


def predict_seconds(compute_seconds: float, rounds: float, nbytes: float,
                    link: Link) -> dict[str, float]:
    """``{"low", "high", "latency_high", "transfer_high"}`` seconds on ``link`` (see the module)."""
    for name, value in (("compute_seconds", compute_seconds), ("rounds", rounds),
                        ("nbytes", nbytes)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    latency = rounds * link.rtt_s
    transfer = nbytes * 8 / link.bandwidth_bps
    return {"low": compute_seconds + latency / 2 + transfer / 2,
            "high": compute_seconds + latency + transfer,
            "latency_high": latency, "transfer_high": transfer}


def predict_table(compute_seconds: float, rounds: float, nbytes: float, units: int,
                  rtts_ms=(1.0, 10.0, 50.0), mbit_s: float = 100.0) -> list[dict[str, float]]:
    """One row per RTT: the predicted seconds per unit of work (``units`` images, say)."""
    if units < 1:
        raise ValueError(f"units must be >= 1, got {units}")
    rows = []
    for rtt in rtts_ms:
        p = predict_seconds(compute_seconds, rounds, nbytes, Link.of(rtt, mbit_s))
        rows.append({"RTT ms": float(rtt), "Mbit/s": float(mbit_s),
                     "s per unit (low)": p["low"] / units, "s per unit (high)": p["high"] / units,
                     "of which latency (high)": p["latency_high"] / units,
                     "of which transfer (high)": p["transfer_high"] / units})
    return rows


def check_prediction(measured_seconds: float, prediction: dict[str, float],
                     slack: float = 0.25) -> dict:
    """Whether a run on a real link took what :func:`predict_seconds` said, within ``slack``
    (relative) outside ``[low, high]``: ``{"within", "ratio_to_high"}``."""
    lo, hi = prediction["low"] * (1 - slack), prediction["high"] * (1 + slack)
    return {"within": bool(lo <= measured_seconds <= hi),
            "ratio_to_high": float(measured_seconds / prediction["high"])}
