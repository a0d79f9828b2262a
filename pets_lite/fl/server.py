"""The server side (Message API): a recording strategy, one experiment on a Grid, its result, and
the Flower App's ``ServerApp``.

:func:`run_experiment` drives one of Flower's strategies (FedAvg, FedProx, FedAdam from
``flwr.serverapp.strategy``), mixed with :class:`Recorder`, which keeps what a teaching companion
wants to show: per-round central test AUC, per-hospital metrics, failures, wall time and the bytes
that cross the wire (counted by :class:`pets_lite.fl.wire.WireTap` on the Grid). The aggregation
is Flower's: the only FedAvg of this package on the Message API.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from .. import config, train
from .settings import FLConfig, FLConfigError
from .task import build_model, central_test
from .wire import WireTap


def array_bytes(arrays) -> int:
    """Payload bytes of an ``ArrayRecord`` or a torch ``state_dict`` (tensor data only).

    >>> import torch; array_bytes({"w": torch.zeros(10, 10)})
    400
    """
    if hasattr(arrays, "count_bytes"):
        return int(sum(len(a.data) for a in arrays.values()))
    return int(sum(t.numel() * t.element_size() for t in arrays.values()))


#: ``on_client_updates(experiment, server_round, {hospital: ArrayRecord}, global ArrayRecord)``
UpdateHook = Callable[[str, int, dict, object], None]


@dataclass
class RoundStats:
    """What the recorder saw in one round."""

    round: int
    started: float = 0.0
    seconds: float = float("nan")
    bytes_down: int = 0
    bytes_up: int = 0
    trained: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    mark: tuple = ()


class Recorder:
    """Mixed into a Flower strategy: times rounds, reads the wire tap, keeps per-hospital
    replies and failures (a hospital whose ClientApp raised comes back as an error reply)."""

    def setup_recorder(self, name: str, tap: WireTap, on_client_updates: UpdateHook | None,
                       keep_updates: bool) -> None:
        self.experiment, self.tap = name, tap
        self.on_client_updates = on_client_updates
        self.keep_updates = keep_updates
        self.rounds: dict[int, RoundStats] = {}
        self.hospital_rows: list[dict] = []
        self.updates: dict[int, dict[int, dict[str, np.ndarray]]] = {}
        self.globals: dict[int, dict[str, np.ndarray]] = {}
        self.current_global = None

    def configure_train(self, server_round, arrays, config, grid):
        stats = self.rounds.setdefault(server_round, RoundStats(server_round))
        stats.started, stats.mark = time.perf_counter(), self.tap.mark()
        self.current_global = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        stats = self.rounds.setdefault(server_round, RoundStats(server_round))
        received = {}
        for msg in replies:
            if msg.has_error():
                stats.failed += 1
                stats.failures.append(f"node {msg.metadata.src_node_id}: {msg.error.reason}")
                continue
            stats.trained += 1
            metrics = dict(msg.content["metrics"])
            received[int(metrics.get("hospital", -1))] = msg.content["arrays"]
            self.hospital_rows.append({"round": server_round, "phase": "train", **metrics})
        if self.keep_updates:
            self.updates[server_round] = {k: {n: a.numpy() for n, a in arr.items()}
                                          for k, arr in received.items()}
            self.globals[server_round] = {n: a.numpy() for n, a in self.current_global.items()}
        if self.on_client_updates is not None:
            self.on_client_updates(self.experiment, server_round, received, self.current_global)
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        for msg in replies:
            if not msg.has_error():
                self.hospital_rows.append({"round": server_round, "phase": "evaluate",
                                           **dict(msg.content["metrics"])})
        stats = self.rounds.setdefault(server_round, RoundStats(server_round))
        stats.seconds = time.perf_counter() - stats.started
        if stats.mark:
            traffic = self.tap.since(stats.mark)
            stats.bytes_down, stats.bytes_up = traffic["bytes_sent"], traffic["bytes_received"]
        return super().aggregate_evaluate(server_round, replies)


def mean_metrics(records, weight_key: str):
    """Weighted mean of every metric over the replies that define it (NaN-safe)."""
    from flwr.app import MetricRecord

    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        w = float(metrics.get(weight_key, 1))
        for key, value in metrics.items():
            if key in (weight_key, "hospital") or isinstance(value, list):
                continue
            if math.isfinite(float(value)) and w > 0:
                sums[key] = sums.get(key, 0.0) + w * float(value)
                weights[key] = weights.get(key, 0.0) + w
    return MetricRecord({k: sums[k] / weights[k] for k in sums})


def make_strategy(cfg: FLConfig, tap: WireTap, on_client_updates: UpdateHook | None = None,
                  keep_updates: bool = False):
    """A recording Flower strategy for ``cfg``: every hospital trains (and, with
    ``client_eval``, evaluates) every round; FedAvg weights each reply by its ``num-examples``."""
    from flwr.serverapp import strategy as fs

    base = {"fedavg": fs.FedAvg, "fedprox": fs.FedProx, "fedadam": fs.FedAdam}[cfg.strategy]
    kwargs = dict(fraction_train=1.0, fraction_evaluate=1.0 if cfg.client_eval else 0.0,
                  min_train_nodes=cfg.n_hospitals,
                  min_evaluate_nodes=cfg.n_hospitals if cfg.client_eval else 0,
                  min_available_nodes=cfg.n_hospitals, weighted_by_key="num-examples",
                  train_metrics_aggr_fn=mean_metrics, evaluate_metrics_aggr_fn=mean_metrics)
    if cfg.strategy == "fedprox":
        kwargs["proximal_mu"] = cfg.proximal_mu
    if cfg.strategy == "fedadam":
        kwargs.update(eta=cfg.server_lr, eta_l=cfg.lr)
    cls = type(f"Recorded{base.__name__}", (Recorder, base), {})
    strategy = cls(**kwargs)
    strategy.setup_recorder(cfg.name, tap, on_client_updates, keep_updates)
    return strategy


@dataclass
class FLResult:
    """One federated experiment's measurements (JSON-able except the weights).

    ``rounds`` has one row per round (0: the initial model) with the central ``test_auc``,
    ``test_acc``, ``test_loss``, ``seconds``, ``bytes_down`` / ``bytes_up`` (serialised messages
    the server sent / received), ``trained``, ``failed`` and ``failures``. With ``keep_updates``:
    ``updates[round][hospital]`` are the weights each hospital sent back and ``globals[round]`` the
    global weights it started from (numpy arrays by parameter name).
    """

    name: str
    config: dict
    rounds: list[dict]
    hospitals: list[dict]
    seconds: float
    state_dict: dict | None = None
    updates: dict | None = None
    globals: dict | None = None
    engine: str = "ray"

    @property
    def final(self) -> dict:
        """Central test metrics of the final global model."""
        return self.rounds[-1]

    @property
    def test_auc(self) -> float:
        return float(self.final["test_auc"])

    @property
    def bytes_per_round(self) -> float:
        """Mean bytes (down + up) per training round."""
        rows = [r for r in self.rounds if r["round"] > 0]
        return float(np.mean([r["bytes_down"] + r["bytes_up"] for r in rows])) if rows else 0.0

    @property
    def seconds_per_round(self) -> float:
        """Mean wall time of a training round (NaN-safe)."""
        values = [r["seconds"] for r in self.rounds if r["round"] > 0
                  and r["seconds"] is not None and math.isfinite(r["seconds"])]
        return float(np.mean(values)) if values else float("nan")

    @property
    def failures(self) -> list[str]:
        return [f"round {r['round']}: {f}" for r in self.rounds for f in r.get("failures", [])]

    def to_json(self) -> dict:
        """Everything but the weights, with NaN written as ``None``."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v
        return clean({"name": self.name, "config": self.config, "rounds": self.rounds,
                      "hospitals": self.hospitals, "seconds": self.seconds,
                      "engine": self.engine})

    @classmethod
    def from_json(cls, blob: dict) -> FLResult:
        """Back from :meth:`to_json` (``None`` stays ``None``)."""
        return cls(blob["name"], blob["config"], blob["rounds"], blob["hospitals"], blob["seconds"],
                   engine=blob.get("engine", "unknown"))


def run_experiment(grid, cfg: FLConfig, on_client_updates: UpdateHook | None = None,
                   keep_updates: bool = False, bar=None, timeout: float = 900.0) -> FLResult:
    """Run ``cfg`` on a Flower ``Grid`` (inside a ``ServerApp``); evaluate centrally every round.

    The grid is wrapped in a :class:`~pets_lite.fl.wire.WireTap` unless it is one already."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

    tap = grid if isinstance(grid, WireTap) else WireTap(grid)
    with config.seeded(cfg.seed):
        model = build_model(cfg)
    test = central_test(cfg.flag, cfg.fast, cfg.seed, cfg.image_size)
    strategy = make_strategy(cfg, tap, on_client_updates, keep_updates)
    central: dict[int, dict] = {}

    def evaluate_fn(server_round: int, arrays):
        model.load_state_dict(arrays.to_torch_state_dict())
        m = train.evaluate(model, test)
        central[server_round] = m
        if bar is not None and server_round > 0:
            bar.update(1)
            bar.set_postfix(experiment=cfg.name, auc=f"{m['auc']:.3f}")
        return MetricRecord({"auc": m["auc"], "acc": m["acc"], "loss": m["loss"]})

    start = time.perf_counter()
    result = strategy.start(grid=tap, initial_arrays=ArrayRecord(model.state_dict()),
                            num_rounds=cfg.rounds, timeout=timeout,
                            train_config=ConfigRecord(cfg.to_record()),
                            evaluate_config=ConfigRecord(cfg.to_record()), evaluate_fn=evaluate_fn)
    seconds = time.perf_counter() - start
    rounds = []
    for r in sorted(central):
        stats = strategy.rounds.get(r, RoundStats(r))
        rounds.append({"round": r, "test_auc": central[r]["auc"], "test_acc": central[r]["acc"],
                       "test_loss": central[r]["loss"], "seconds": stats.seconds,
                       "bytes_down": stats.bytes_down, "bytes_up": stats.bytes_up,
                       "trained": stats.trained, "failed": stats.failed,
                       "failures": list(stats.failures)})
    final = result.arrays.to_torch_state_dict() if result.arrays else model.state_dict()
    return FLResult(cfg.name, dataclasses.asdict(cfg), rounds, strategy.hospital_rows, seconds,
                    state_dict={k: v.clone() for k, v in final.items()},
                    updates=strategy.updates if keep_updates else None,
                    globals=strategy.globals if keep_updates else None)


def model_from_result(result: FLResult, cfg: FLConfig | None = None) -> nn.Module:
    """The final global model of an experiment, ready to evaluate."""
    if result.state_dict is None:
        raise FLConfigError(f"result {result.name!r} carries no weights (it came from JSON)")
    cfg = cfg or FLConfig(**result.config)
    model = build_model(cfg)
    model.load_state_dict(copy.deepcopy(result.state_dict))
    model.eval()
    return model


def make_server_app():
    """The Flower App's ``ServerApp``: one experiment from the run config, results to a file."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context):
        run_config = dict(context.run_config)
        cfg = FLConfig.from_record(run_config)
        result = run_experiment(grid, cfg)
        # HttpGrid: the SuperLink's (deployment engine); InMemoryGrid: the simulation engine's
        result.engine = {"HttpGrid": "deployment", "InMemoryGrid": "ray"}.get(
            type(grid).__name__, type(grid).__name__)
        out = str(run_config.get("results-path", "") or "")
        if out:
            write_result(result, out)

    return app


def write_result(result: FLResult, path: str | os.PathLike) -> Path:
    """Write ``result.to_json()`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=1))
    tmp.replace(path)
    return path
