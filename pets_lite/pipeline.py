"""The hybrid pipeline of chapter 10, and the book-wide privacy-utility-cost table.

The pipeline composes the PET modules:

    de-identified DICOM intake (deid) -> federated training across hospitals with DP-SGD inside
    each hospital (dp) and SecAgg+ over the updates (fl.secagg) -> encrypted inference on the
    trained model (he) -> an attack on the released model (attacks).

Its federated training is the package's one SecAgg+ path (:func:`pets_lite.fl.secagg.simulate`)
with DP-SGD (:func:`pets_lite.dp.train_dp`) as every hospital's local update; ``secure=False``
runs plain FedAvg on the same path. The table reads the typed rows every chapter of the same build
recorded (:func:`pets_lite.results.record_rows`) from the executed notebooks, so each number in it
was measured by the chapter that owns it, and a chapter that ran without its rows fails the table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from torch.utils.data import TensorDataset

from . import config, dp, results, train
from .fl import secagg

# ---------------------------------------------------------------------------------------------
# Federated training with DP-SGD in every hospital, aggregated with SecAgg+
# ---------------------------------------------------------------------------------------------


@dataclass
class FederatedDPResult:
    """What :func:`federated_dp` measured.

    ``rounds``: per round the central test AUC / ACC, seconds, bytes on the wire (sent and
    received by the server), message exchanges and how many distinct updates the server's strategy
    was handed. Per hospital: its noise multiplier ``sigma``, Poisson ``sample_rates``, DP-SGD
    ``steps`` over all rounds and the ``epsilon`` they spend at ``delta`` (RDP).
    """

    rounds: list[dict] = field(default_factory=list)
    sigma: list[float] = field(default_factory=list)
    epsilon: list[float] = field(default_factory=list)
    delta: float = dp.DELTA
    sample_rates: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    secure: bool = True
    engine: str = ""
    #: For each vector a hospital sent in the last round, its |correlation| with the aggregate
    #: update (:meth:`pets_lite.fl.secagg.SecAggResult.wire_vs_aggregate`; with ``keep_wire``).
    wire_vs_aggregate: list[float] = field(default_factory=list)

    @property
    def bytes_total(self) -> int:
        return int(sum(r["bytes"] for r in self.rounds))


def calibrate(hospitals: list[TensorDataset], rounds: int, epsilon: float, delta: float,
              local_epochs: int, batch_size: int) -> list[dict]:
    """Per hospital: batch size, sample rate, total steps and the noise multiplier that keeps all
    its DP-SGD steps over all rounds within ``(epsilon, delta)`` (RDP, Poisson sampling)."""
    out = []
    for h in hospitals:
        batch = min(batch_size, max(1, len(h) // 4))
        per_epoch = math.ceil(len(h) / batch)
        q, steps = 1 / per_epoch, rounds * local_epochs * per_epoch
        out.append({"batch": batch, "q": q, "steps": steps,
                    "sigma": dp.noise_multiplier_for(epsilon, delta, q, steps)})
    return out


@dataclass
class DPUpdate:
    """Every hospital's local update in the hybrid, as a :data:`pets_lite.fl.secagg.LocalUpdate`:
    hospital k loads the global parameters into ``build()`` and runs ``local_epochs`` of DP-SGD
    (:func:`pets_lite.dp.train_dp`) on its patients with its planned noise multiplier and batch
    (:func:`calibrate`); its randomness is the stream of (seed, hospital k, round)."""

    hospitals: list[TensorDataset]
    build: Callable[[], nn.Module]
    plan: list[dict]
    delta: float = dp.DELTA
    local_epochs: int = 1
    lr: float = 2e-3
    max_grad_norm: float = 1.0
    seed: int = 0

    def __call__(self, hospital: int, params: list[np.ndarray], server_round: int = 1
                 ) -> list[np.ndarray]:
        model = self.build()
        secagg.load_parameters(model, params)
        plan = self.plan[hospital]
        dp.train_dp(model, self.hospitals[hospital], None, noise_multiplier=plan["sigma"],
                    delta=self.delta, epochs=self.local_epochs, batch_size=plan["batch"],
                    lr=self.lr, max_grad_norm=self.max_grad_norm,
                    seed=config.derive_seed(self.seed, "hospital", hospital, "round",
                                            server_round), progress=False)
        return secagg.model_parameters(model)


def federated_dp(hospitals: list[TensorDataset], build: Callable[[], nn.Module],
                 test: TensorDataset, rounds: int, epsilon: float, delta: float = dp.DELTA,
                 local_epochs: int = 1, batch_size: int = 64, lr: float = 2e-3,
                 max_grad_norm: float = 1.0, seed: int = 0, secure: bool = True,
                 engine: str = "ray", fallback: bool = False, keep_wire: bool = False,
                 **engine_options) -> tuple[nn.Module, FederatedDPResult]:
    """FedAvg in which every hospital trains with DP-SGD on its own patients, the updates summed
    under SecAgg+ (``secure=False``: plain FedAvg on the same path).

    Each hospital's noise multiplier is calibrated so that all its local steps over all ``rounds``
    spend at most ``(epsilon, delta)`` (RDP accountant, Poisson sampling): a **sample-level**
    guarantee for that hospital's patients against anyone who sees its updates, the aggregate or
    the final model. Hospitals hold disjoint patients, so the guarantees do not compose across
    them. Hospitals are weighted equally (SecAgg+ sums weight-1 updates). ``engine`` /
    ``fallback`` / ``engine_options`` go to :func:`pets_lite.fl.secagg.simulate`. Returns
    ``(model, FederatedDPResult)``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    dp.check_budget(epsilon, delta, min(len(h) for h in hospitals))
    plan = calibrate(hospitals, rounds, epsilon, delta, local_epochs, batch_size)
    with config.seeded(seed):
        model = build()
    update = DPUpdate(hospitals, build, plan, delta, local_epochs, lr, max_grad_norm, seed)

    def evaluate(name, server_round, parameters):
        secagg.load_parameters(model, parameters)
        m = train.evaluate(model, test)
        return {"test_auc": m["auc"], "test_acc": m["acc"]}

    name = "hybrid" if secure else "hybrid-plain"
    run = secagg.simulate(update, secagg.model_parameters(model), len(hospitals),
                          [secagg.Experiment(name, secure=secure, rounds=rounds)], engine=engine,
                          fallback=fallback, evaluate=evaluate, keep_wire=keep_wire,
                          **engine_options)[name]
    result = FederatedDPResult(
        delta=delta, secure=secure, engine=run.engine, sigma=[p["sigma"] for p in plan],
        sample_rates=[p["q"] for p in plan], steps=[p["steps"] for p in plan],
        rounds=[{"round": r["round"], "test_auc": r["test_auc"], "test_acc": r["test_acc"],
                 "seconds": r["seconds"], "bytes": r["bytes_sent"] + r["bytes_received"],
                 "exchanges": r["exchanges"], "updates_seen_by_server": r["distinct_seen"]}
                for r in run.rounds])
    result.epsilon = [dp.opacus_epsilon(s, q, n, delta)
                      for s, q, n in zip(result.sigma, result.sample_rates, result.steps)]
    if keep_wire:
        result.wire_vs_aggregate = run.wire_vs_aggregate(rounds)
    secagg.load_parameters(model, run.aggregates[-1])
    model.eval()
    return model, result


# ---------------------------------------------------------------------------------------------
# The book-wide table
# ---------------------------------------------------------------------------------------------

#: The rows of the book-wide table each chapter owns (it records their describing fields).
EXPECTED_ROWS = {"00": ("baseline",), "01": ("deid",), "02": ("dp-eps8", "dp-eps1"),
                 "03": ("fedavg",), "04": ("secagg",), "05": ("he-ckks",), "06": ("mpc-2pc",),
                 "08": ("split-vanilla",), "09": ("tee-sim",), "10": ("hybrid",)}
#: What a chapter measures on rows other chapters own: chapter 07 attacks the models of 00 and
#: 02; chapter 04 inverts one FedAvg update of one image.
EXPECTED_MEASURES = {"07": {"baseline": ("membership_tpr",), "dp-eps8": ("membership_tpr",),
                            "dp-eps1": ("membership_tpr",)},
                     "04": {"fedavg": ("reconstruction_ssim",)}}
#: The fields of a row that hold a measurement (a row must have at least one).
MEASURED = ("epsilon", "membership_tpr", "reconstruction_ssim", "test_auc", "seconds",
            "megabytes")


def chapter_results(folder: str | os.PathLike | None = None,
                    exclude: tuple[str, ...] = ("10",)) -> dict[str, dict]:
    """``{notebook stem: recorded values}`` for every executed notebook of this build
    (``pets_lite.config.executed_dir()`` by default), but the chapters in ``exclude`` (chapter
    10 assembles the table; an executed copy of it from an earlier build is not a source)."""
    import nbformat

    from . import nbrun

    folder = Path(folder) if folder is not None else config.executed_dir()
    if folder is None or not folder.is_dir():
        return {}
    return {p.stem: nbrun.glued(nbformat.read(p, as_version=4))
            for p in sorted(folder.glob("*.ipynb")) if p.stem[:2] not in exclude}


def table_problems(chapters: list[str], rows: list[results.BookRow]) -> list[str]:
    """What is missing from ``rows`` for the ``chapters`` (two-digit numbers) that ran: a row a
    chapter owns (:data:`EXPECTED_ROWS`), a row with no measurement, a measurement a chapter
    makes on another's row (:data:`EXPECTED_MEASURES`). Each problem names its chapter."""
    by_key = {r.key: r for r in rows}
    problems = []
    for chapter in sorted(set(chapters)):
        for key in EXPECTED_ROWS.get(chapter, ()):
            row = by_key.get(key)
            if row is None or row.technique is None:
                problems.append(f"chapter {chapter} recorded no row {key!r}")
            elif all(getattr(row, f) is None for f in MEASURED):
                problems.append(f"chapter {chapter}'s row {key!r} holds no measurement")
        for key, fields in EXPECTED_MEASURES.get(chapter, {}).items():
            missing = [f for f in fields if getattr(by_key.get(key), f, None) is None]
            if missing:
                problems.append(f"chapter {chapter} did not record {missing} on row {key!r}")
    return problems


def book_table(chapters: dict[str, dict], extra: list[results.BookRow] = (),
               this_chapter: str = "10") -> list[results.BookRow]:
    """The book-wide table: :func:`pets_lite.results.book_table` over what the chapters of this
    build recorded and this chapter's ``extra`` rows; raises :class:`pets_lite.results.
    BookRowError` naming the chapter when one that ran lacks its rows (:func:`table_problems`)."""
    rows = results.book_table(chapters, list(extra))
    ran = [stem[:2] for stem in chapters] + ([this_chapter] if extra else [])
    problems = table_problems(ran, rows)
    if problems:
        raise results.BookRowError("; ".join(problems))
    return rows


def table_frame(rows: list[results.BookRow]):
    """The table as a pandas DataFrame indexed by key, one column per field (units in the
    column names), empty cells where a configuration does not measure a quantity."""
    import dataclasses

    import pandas as pd

    names = {"epsilon": "ε (δ=1e-5)", "membership_tpr": "LiRA TPR at 0.1% FPR",
             "reconstruction_ssim": "reconstruction SSIM", "test_auc": "test AUC",
             "seconds": "seconds per unit", "megabytes": "MB per unit", "per": "unit",
             "peak_mib": "peak MiB"}
    frame = pd.DataFrame([dataclasses.asdict(r) for r in rows]).set_index("key")
    return frame.rename(columns=names)
