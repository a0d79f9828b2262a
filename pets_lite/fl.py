"""Federated learning across hospitals with Flower 1.42's Message API.

One ``ClientApp`` (:data:`client_app`) is a hospital: it reads which data set, partition and
training recipe to use from the ``ConfigRecord`` the server sends, trains the received global model
on its own images and replies with the new weights; on ``evaluate`` it scores the global model on
its local validation images. The server side (:func:`run_experiment`) drives one of Flower's
strategies (FedAvg, FedProx, FedAdam from ``flwr.serverapp.strategy``) wrapped in a thin recorder
that keeps what a teaching companion wants to show: per-round central test AUC, per-hospital
metrics, failures, wall time and the bytes that cross the network.

The same two apps run on

* Flower's simulation engine in a notebook, :func:`simulate` (Ray; one start-up for many
  experiments, since the ``ServerApp`` runs them one after the other);
* the deployment engine (SuperLink + SuperNodes over the network), through the Flower App in
  ``pets_lite/fl_app`` and :mod:`pets_lite.fl_deploy`.

Reusable pieces for the secure-aggregation and gradient-inversion chapters: :func:`client_update`
(one hospital's local step, outside Flower), :func:`array_bytes`, and the ``on_client_updates``
hook of :func:`make_strategy` / :func:`simulate`, which hands over every hospital's individual
update as the server receives it (exactly what secure aggregation hides).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from . import config, data, models, train
from .recipes import cached_model

STRATEGIES = ("fedavg", "fedprox", "fedadam")


class FLConfigError(ValueError):
    """A federated-learning setting that cannot work (named, with what to do)."""


@dataclass(frozen=True)
class FLConfig:
    """One federated experiment: data, partition, strategy and the local training recipe.

    It travels to the hospitals inside every message (:meth:`to_record`), so one ``ClientApp``
    serves any number of experiments in a single simulation.
    """

    name: str = "fedavg"
    strategy: str = "fedavg"
    flag: str = "pneumoniamnist"
    fast: bool = True
    seed: int = 0
    n_hospitals: int = 3
    scheme: str = "dirichlet"
    alpha: float = 0.5
    min_size: int = 10
    rounds: int = 3
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    proximal_mu: float = 0.0
    server_lr: float = 0.01
    width: int = 16
    depth: int = 3
    fail_hospital: int = -1
    fail_round: int = 0
    client_eval: bool = True

    def __post_init__(self):
        problems = []
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy {self.strategy!r} is not one of {STRATEGIES}")
        for name in ("n_hospitals", "rounds", "local_epochs", "batch_size", "width", "depth",
                     "min_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "server_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.proximal_mu, (int, float)) or not self.proximal_mu >= 0:
            problems.append(f"proximal_mu must be >= 0, got {self.proximal_mu!r}")
        if self.strategy == "fedprox" and self.proximal_mu == 0:
            problems.append("fedprox needs proximal_mu > 0 (0 makes it FedAvg); try 0.01-1.0")
        if self.scheme not in data.PARTITION_SCHEMES:
            problems.append(f"scheme {self.scheme!r} is not one of {data.PARTITION_SCHEMES}")
        elif self.scheme != "iid" and (not isinstance(self.alpha, (int, float))
                                       or not math.isfinite(self.alpha) or self.alpha <= 0):
            problems.append(f"alpha must be > 0 for the {self.scheme!r} scheme, got {self.alpha!r}")
        n = self.n_hospitals if isinstance(self.n_hospitals, int) else 0
        if isinstance(self.fail_hospital, bool) or not isinstance(self.fail_hospital, int) \
                or not -1 <= self.fail_hospital < max(n, 1):
            problems.append(f"fail_hospital must be -1 (none) or a hospital index 0..n_hospitals-1, "
                            f"got {self.fail_hospital!r}")
        if not isinstance(self.fail_round, int) or self.fail_round < 0:
            problems.append(f"fail_round must be 0 (every round) or a round number, got "
                            f"{self.fail_round!r}")
        if problems:
            raise FLConfigError("invalid FLConfig: " + "; ".join(problems))

    def replace(self, **changes) -> FLConfig:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict:
        """The settings as a flat dict with Flower-style hyphenated keys (for a ConfigRecord)."""
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_record(cls, record) -> FLConfig:
        """Back from a ConfigRecord / run config; unknown keys (Flower's own) are ignored."""
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in dict(record).items():
            name = str(key).replace("-", "_")
            if name in names:
                default = getattr(cls, name)
                kwargs[name] = type(default)(value) if not isinstance(default, bool) else bool(value)
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# The hospital side: data, local training, the ClientApp
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def hospital_data(flag: str, fast: bool, seed: int, n_hospitals: int, scheme: str, alpha: float,
                  min_size: int, hospital: int) -> dict[str, TensorDataset]:
    """Hospital ``hospital``'s ``{"train", "val"}`` share (cached per process)."""
    if not 0 <= hospital < n_hospitals:
        raise FLConfigError(f"hospital index {hospital} is outside 0..{n_hospitals - 1}")
    splits = data.load_splits(flag, fast=fast, seed=seed)
    return data.partition_splits(splits, n_hospitals, scheme, alpha, seed, min_size)[hospital]


def config_data(cfg: FLConfig, hospital: int) -> dict[str, TensorDataset]:
    """:func:`hospital_data` for an experiment's settings."""
    return hospital_data(cfg.flag, cfg.fast, cfg.seed, cfg.n_hospitals, cfg.scheme,
                         float(cfg.alpha), cfg.min_size, hospital)


def build_model(cfg: FLConfig) -> nn.Module:
    """The experiment's global model (a :class:`pets_lite.models.SmallCNN`)."""
    meta = data.info(cfg.flag)
    return models.build_model("cnn", in_channels=meta.n_channels, n_classes=meta.n_classes,
                              width=cfg.width, depth=cfg.depth)


def local_train(model: nn.Module, dataset: TensorDataset, epochs: int = 1, lr: float = 1e-3,
                batch_size: int = 32, seed: int = 0, proximal_mu: float = 0.0) -> dict[str, float]:
    """Train in place with AdamW; with ``proximal_mu > 0`` add FedProx's (mu/2)||w - w_global||^2.

    The proximal anchor is the model as it arrives (the global model of this round).
    """
    if len(dataset) == 0:
        raise FLConfigError("a hospital with no training images cannot train; check the partition")
    torch.manual_seed(seed)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    batches = train.loader(dataset, batch_size, shuffle=True, seed=seed)
    model.train()
    total, count, start = 0.0, 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            total += loss.item() * len(y)
            count += len(y)
            if anchor is not None:
                loss = loss + proximal_mu / 2 * sum(((p - a) ** 2).sum()
                                                    for p, a in zip(model.parameters(), anchor))
            loss.backward()
            optimizer.step()
    return {"train-loss": total / max(count, 1), "train-seconds": time.perf_counter() - start}


def client_update(cfg: FLConfig, hospital: int, global_state: dict[str, torch.Tensor],
                  server_round: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One hospital's local step outside Flower: ``(new state_dict, metrics)``.

    This is what the ``ClientApp`` runs on ``train`` messages; the gradient-inversion and secure
    aggregation chapters call it directly.
    """
    local = config_data(cfg, hospital)["train"]
    model = build_model(cfg)
    model.load_state_dict(global_state)
    metrics = local_train(model, local, cfg.local_epochs, cfg.lr, cfg.batch_size,
                          seed=cfg.seed * 1_000_003 + server_round * 101 + hospital,
                          proximal_mu=cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0)
    metrics["num-examples"] = len(local)
    return model.state_dict(), metrics


def client_evaluate(cfg: FLConfig, hospital: int,
                    global_state: dict[str, torch.Tensor]) -> dict[str, float]:
    """The global model scored on one hospital's local validation images."""
    local = config_data(cfg, hospital)["val"]
    model = build_model(cfg)
    model.load_state_dict(global_state)
    if len(local) == 0:
        return {"val-auc": float("nan"), "val-acc": float("nan"), "val-loss": float("nan"),
                "num-examples": 0}
    m = train.evaluate(model, local)
    return {"val-auc": m["auc"], "val-acc": m["acc"], "val-loss": m["loss"],
            "num-examples": len(local)}


def _hospital_of(context, cfg: FLConfig) -> int:
    node = context.node_config
    if "partition-id" not in node:
        raise FLConfigError(
            "this SuperNode has no 'partition-id' in its node config; start it with "
            "--node-config 'partition-id=<k> num-partitions=<n>'"
        )
    k, n = int(node["partition-id"]), int(node.get("num-partitions", cfg.n_hospitals))
    if n != cfg.n_hospitals:
        raise FLConfigError(
            f"this SuperNode was started for {n} partitions but the experiment splits the data "
            f"over n-hospitals={cfg.n_hospitals}; start {cfg.n_hospitals} SuperNodes with "
            f"num-partitions={cfg.n_hospitals}, or change n-hospitals"
        )
    return k


def _make_client_app():
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def _train(msg, context):
        cfg = FLConfig.from_record(msg.content["config"])
        hospital = _hospital_of(context, cfg)
        server_round = int(msg.content["config"].get("server-round", 1))
        if cfg.fail_hospital == hospital and cfg.fail_round in (0, server_round):
            raise RuntimeError(f"injected fault: hospital H{hospital + 1} crashed in round "
                               f"{server_round} (fail-hospital={cfg.fail_hospital})")
        state, metrics = client_update(cfg, hospital, msg.content["arrays"].to_torch_state_dict(),
                                       server_round)
        metrics["hospital"] = hospital
        return Message(content=RecordDict({"arrays": ArrayRecord(state),
                                           "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def _evaluate(msg, context):
        cfg = FLConfig.from_record(msg.content["config"])
        hospital = _hospital_of(context, cfg)
        metrics = client_evaluate(cfg, hospital, msg.content["arrays"].to_torch_state_dict())
        metrics["hospital"] = hospital
        return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app




# ---------------------------------------------------------------------------------------------
# The server side: instrumented strategies, one experiment, the ServerApp
# ---------------------------------------------------------------------------------------------

def array_bytes(arrays) -> int:
    """Payload bytes of an ``ArrayRecord`` or a torch ``state_dict`` (tensor data only).

    >>> array_bytes({"w": torch.zeros(10, 10)})
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


class _Recorder:
    """Mixed into a Flower strategy: counts bytes, times rounds, keeps per-hospital replies."""

    def _setup_recorder(self, name: str, on_client_updates: UpdateHook | None,
                        keep_updates: bool) -> None:
        self.experiment = name
        self.on_client_updates = on_client_updates
        self.keep_updates = keep_updates
        self.rounds: dict[int, RoundStats] = {}
        self.hospital_rows: list[dict] = []
        self.updates: dict[int, dict[int, dict[str, np.ndarray]]] = {}
        self.globals: dict[int, dict[str, np.ndarray]] = {}
        self._global = None

    def configure_train(self, server_round, arrays, config, grid):
        messages = list(super().configure_train(server_round, arrays, config, grid))
        stats = self.rounds.setdefault(server_round, RoundStats(server_round))
        stats.started = time.perf_counter()
        stats.bytes_down += array_bytes(arrays) * len(messages)
        self._global = arrays
        return messages

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
            arrays = msg.content["arrays"]
            stats.bytes_up += array_bytes(arrays)
            metrics = dict(msg.content["metrics"])
            hospital = int(metrics.get("hospital", -1))
            received[hospital] = arrays
            self.hospital_rows.append({"round": server_round, "phase": "train", **metrics})
        if self.keep_updates:
            self.updates[server_round] = {k: {n: a.numpy() for n, a in arr.items()}
                                          for k, arr in received.items()}
            self.globals[server_round] = {n: a.numpy() for n, a in self._global.items()}
        if self.on_client_updates is not None:
            self.on_client_updates(self.experiment, server_round, received, self._global)
        return super().aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round, arrays, config, grid):
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        stats = self.rounds.setdefault(server_round, RoundStats(server_round))
        stats.bytes_down += array_bytes(arrays) * len(messages)
        return messages

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        for msg in replies:
            if not msg.has_error():
                self.hospital_rows.append({"round": server_round, "phase": "evaluate",
                                           **dict(msg.content["metrics"])})
        stats = self.rounds.setdefault(server_round, RoundStats(server_round))
        stats.seconds = time.perf_counter() - stats.started
        return super().aggregate_evaluate(server_round, replies)


def _mean_metrics(records, weight_key: str):
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


def make_strategy(cfg: FLConfig, on_client_updates: UpdateHook | None = None,
                  keep_updates: bool = False):
    """A Flower strategy for ``cfg`` (every hospital trains and evaluates every round), recording."""
    from flwr.serverapp import strategy as fs

    base = {"fedavg": fs.FedAvg, "fedprox": fs.FedProx, "fedadam": fs.FedAdam}[cfg.strategy]
    kwargs = dict(fraction_train=1.0, fraction_evaluate=1.0 if cfg.client_eval else 0.0,
                  min_train_nodes=cfg.n_hospitals,
                  min_evaluate_nodes=cfg.n_hospitals if cfg.client_eval else 0,
                  min_available_nodes=cfg.n_hospitals, train_metrics_aggr_fn=_mean_metrics,
                  evaluate_metrics_aggr_fn=_mean_metrics)
    if cfg.strategy == "fedprox":
        kwargs["proximal_mu"] = cfg.proximal_mu
    if cfg.strategy == "fedadam":
        kwargs.update(eta=cfg.server_lr, eta_l=cfg.lr)
    cls = type(f"Recorded{base.__name__}", (_Recorder, base), {})
    strategy = cls(**kwargs)
    strategy._setup_recorder(cfg.name, on_client_updates, keep_updates)
    return strategy


@dataclass
class FLResult:
    """One federated experiment's measurements (JSON-able except the weights).

    With ``keep_updates``: ``updates[round][hospital]`` are the weights each hospital sent back
    and ``globals[round]`` the global weights it started from (numpy arrays by parameter name).
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


@lru_cache(maxsize=4)
def _central_test(flag: str, fast: bool, seed: int) -> TensorDataset:
    return data.load(flag, "test", fast=fast, seed=seed)


def run_experiment(grid, cfg: FLConfig, on_client_updates: UpdateHook | None = None,
                   keep_updates: bool = False, bar=None, timeout: float = 900.0) -> FLResult:
    """Run ``cfg`` on a Flower ``Grid`` (inside a ``ServerApp``); evaluate centrally every round."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

    config.seed_everything(cfg.seed)
    model = build_model(cfg)
    test = _central_test(cfg.flag, cfg.fast, cfg.seed)
    strategy = make_strategy(cfg, on_client_updates, keep_updates)
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
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
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


def _make_server_app():
    """The Flower App's ``ServerApp``: one experiment from the run config, results to a file."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def _main(grid, context):
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


_APPS: dict = {}


def __getattr__(name: str):
    """``client_app`` / ``server_app``: the Flower App components, built on first use (importing
    Flower takes seconds, and most callers of this module never need it)."""
    if name in ("client_app", "server_app"):
        if name not in _APPS:
            _APPS[name] = _make_client_app() if name == "client_app" else _make_server_app()
        return _APPS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# An in-process Grid: the real ClientApp and strategies, no engine (tests; machines without Ray)
# ---------------------------------------------------------------------------------------------

class InProcessGrid:
    """A Flower ``Grid`` that hands each message to the ``ClientApp`` in this process, node by node.

    It keeps Flower's contract: a ``ClientApp`` that raises yields an error reply (as the engines
    do), never an exception in the ``ServerApp``. Unit tests use it to exercise the strategies and
    the ``ClientApp`` in seconds; it is not an engine (no isolation, no network, no parallelism).
    """

    def __init__(self, n_nodes: int, app=None, run_config: dict | None = None):
        from flwr.app import Context, RecordDict

        self.app = app or __getattr__("client_app")
        self.node_ids = [1000 + k for k in range(n_nodes)]
        self.contexts = {
            node: Context(run_id=1, node_id=node, state=RecordDict(),
                          node_config={"partition-id": k, "num-partitions": n_nodes},
                          run_config=dict(run_config or {}))
            for k, node in enumerate(self.node_ids)}

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list:
        from flwr.app import Error, Message

        replies = []
        for msg in messages:
            try:
                reply = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as exc:  # what the engines do: an error reply, the round goes on
                reply = Message(Error(code=2, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            replies.append(reply)
        return replies

    def __enter__(self) -> InProcessGrid:
        """Give this process the task identity Flower's ``Message`` reads (restored on exit)."""
        from flwr.supercore.task_identity import TaskIdentity

        self._saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        return self

    def __exit__(self, *exc) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = self._saved


def run_in_process(experiments: Iterable[FLConfig], **kwargs) -> dict[str, FLResult]:
    """Run experiments on an :class:`InProcessGrid` (same results format as :func:`simulate`)."""
    experiments = list(experiments)
    with quiet_flower(), InProcessGrid(experiments[0].n_hospitals) as grid:
        results = {cfg.name: run_experiment(grid, cfg, **kwargs) for cfg in experiments}
    for res in results.values():
        res.engine = "in-process"
    return results


# ---------------------------------------------------------------------------------------------
# Simulation engine
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_flower(verbose: bool = False):
    """Keep Flower's log lines out of a notebook (failures still surface as exceptions and in
    the recorded ``failures``)."""
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _ray_start_failed(exc: BaseException) -> bool:
    """True when an exception chain says Ray's node failed to start (nothing ran yet)."""
    while exc is not None:
        if "timed out during startup" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _stop_stray_ray(before: set[int]) -> list[int]:
    """Stop the Ray processes a failed start left behind (children of this process only)."""
    import psutil

    with contextlib.suppress(Exception):
        import ray

        ray.shutdown()
    stray = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.pid not in before and ("ray" in " ".join(p.cmdline()) or p.name().startswith(
                    ("ray::", "raylet", "gcs_server"))):
                stray.append(p)
    for p in stray:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(stray, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return [p.pid for p in stray]


def simulate(experiments: Iterable[FLConfig], cpus_per_client: float = 1.0,
             ray_cpus: int | None = None, on_client_updates: UpdateHook | None = None,
             keep_updates: bool = False, verbose: bool = False, progress: bool = True,
             ray_start_attempts: int = 2, fallback: bool = False) -> dict[str, FLResult]:
    """Run experiments one after another in ONE Flower simulation (one Ray start-up).

    Every experiment must use the same number of hospitals (the number of simulated SuperNodes).
    ``cpus_per_client`` is Ray's ``client_resources``: with 2 cores and 1 CPU each, two hospitals
    train at once. Returns ``{name: FLResult}``; each result's ``engine`` says what ran it.

    Ray's raylet gives its agents a fixed 15 s to start (ray-project/ray#65983): on an overloaded
    machine the start fails. It is tried ``ray_start_attempts`` times (what a failed start left
    running is stopped); then, with ``fallback=True``, the same apps run on an
    :class:`InProcessGrid` with a printed warning, otherwise the error is raised.
    """
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    experiments = list(experiments)
    if not experiments:
        raise FLConfigError("simulate() needs at least one FLConfig")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise FLConfigError(f"experiment names must be unique, got {names}")
    sizes = {e.n_hospitals for e in experiments}
    if len(sizes) != 1:
        raise FLConfigError(f"all experiments of one simulation need the same n_hospitals, got "
                            f"{sorted(sizes)}; run one simulate() call per number of hospitals")
    if cpus_per_client <= 0:
        raise FLConfigError(f"cpus_per_client must be > 0, got {cpus_per_client}")
    import psutil

    n_hospitals = sizes.pop()
    ray_cpus = ray_cpus or os.cpu_count() or 1
    results: dict[str, FLResult] = {}
    bar = config.progress(total=sum(e.rounds for e in experiments), desc="federated rounds",
                          disable=not progress)

    app = ServerApp()

    @app.main()
    def _main(grid, context):
        for cfg in experiments:
            results[cfg.name] = run_experiment(grid, cfg, on_client_updates, keep_updates, bar)

    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
               "init_args": {"num_cpus": ray_cpus, "logging_level": "ERROR",
                             "log_to_driver": verbose, "include_dashboard": False}}
    engine = "ray"
    with quiet_flower(verbose):
        try:
            for attempt in range(1, ray_start_attempts + 1):
                before = {p.pid for p in psutil.Process().children(recursive=True)}
                try:
                    run_simulation(server_app=app, client_app=__getattr__("client_app"),
                                   num_supernodes=n_hospitals, backend_config=backend,
                                   verbose_logging=verbose)
                    break
                except RuntimeError as exc:
                    if results or not _ray_start_failed(exc):
                        raise
                    stray = _stop_stray_ray(before)
                    print(f"Ray did not start (attempt {attempt} of {ray_start_attempts}; "
                          f"stopped {len(stray)} processes it left)", flush=True)
                    if attempt < ray_start_attempts:
                        continue
                    if not fallback:
                        raise
                    print("WARNING: running the same ClientApp and strategies on an in-process "
                          "grid instead of Flower's simulation engine", flush=True)
                    engine = "in-process"
                    with InProcessGrid(n_hospitals) as grid:
                        for cfg in experiments:
                            results[cfg.name] = run_experiment(grid, cfg, on_client_updates,
                                                               keep_updates, bar)
        finally:
            bar.close()
    missing = [n for n in names if n not in results]
    if missing:
        raise RuntimeError(f"the simulation ended before experiments {missing} finished; rerun "
                           "with verbose=True to see Flower's log")
    for res in results.values():
        res.engine = engine
    return results


# ---------------------------------------------------------------------------------------------
# Baselines and tables for the notebook
# ---------------------------------------------------------------------------------------------

def local_only(cfg: FLConfig, epochs: int | None = None, progress: bool = True) -> list[dict]:
    """Each hospital trains alone on its own images; scored on the central test split.

    Epochs default to the federated budget (rounds x local epochs). Model selection on the
    hospital's own validation images when they hold both classes, else the last epoch.
    """
    epochs = epochs or cfg.rounds * cfg.local_epochs
    test = _central_test(cfg.flag, cfg.fast, cfg.seed)
    rows = []
    bar = config.progress(range(cfg.n_hospitals), desc=f"hospitals alone ({cfg.scheme}, "
                          f"alpha={cfg.alpha})", disable=not progress)
    for k in bar:
        local = config_data(cfg, k)
        val = local["val"] if len(torch.unique(local["val"].tensors[1])) > 1 else None
        config.seed_everything(cfg.seed)
        model = build_model(cfg)
        history = train.fit(model, local["train"], val, epochs=epochs, lr=cfg.lr,
                            batch_size=cfg.batch_size, seed=cfg.seed + k, progress=False)
        m = train.evaluate(model, test)
        rows.append({"hospital": f"H{k + 1}", "n_train": len(local["train"]),
                     "test_auc": m["auc"], "test_acc": m["acc"],
                     "seconds": history.total_seconds})
    return rows


def centralized(cfg: FLConfig, epochs: int | None = None, progress: bool = True,
                refresh: bool = False) -> tuple[nn.Module, dict]:
    """The pooled reference: the same model trained on every hospital's images in one place.

    Same budget as the federation by default (rounds x local epochs over the pooled data), with
    model selection on the pooled validation split; cached in the model cache.
    """
    recipe = train.BaselineRecipe(flag=cfg.flag, seed=cfg.seed, fast=cfg.fast, width=cfg.width,
                                  depth=cfg.depth, epochs=epochs or cfg.rounds * cfg.local_epochs,
                                  batch_size=cfg.batch_size, lr=cfg.lr)
    splits = data.load_splits(cfg.flag, fast=cfg.fast, seed=cfg.seed)

    def fit_fn(model):
        h = train.fit(model, splits["train"], splits["val"], epochs=recipe.epochs, lr=recipe.lr,
                      batch_size=recipe.batch_size, seed=recipe.seed, progress=progress,
                      desc="centralized (pooled)")
        return {"seconds": h.total_seconds, "best_epoch": h.best_epoch}

    model, info, _ = cached_model("fl_centralized", recipe, lambda: build_model(cfg), fit_fn,
                                  refresh=refresh)
    model.eval()
    return model, {**info, **train.evaluate(model, _central_test(cfg.flag, cfg.fast, cfg.seed))}


def model_from_result(result: FLResult, cfg: FLConfig | None = None) -> nn.Module:
    """The final global model of a simulated experiment, ready to evaluate."""
    if result.state_dict is None:
        raise FLConfigError(f"result {result.name!r} carries no weights (it came from JSON)")
    cfg = cfg or FLConfig(**result.config)
    model = build_model(cfg)
    model.load_state_dict(copy.deepcopy(result.state_dict))
    model.eval()
    return model


def rounds_table(results: dict[str, FLResult]):
    """Long pandas table: one row per (experiment, round)."""
    import pandas as pd

    return pd.DataFrame([{"experiment": name, **{k: v for k, v in row.items() if k != "failures"}}
                         for name, res in results.items() for row in res.rounds])


def hospitals_table(result: FLResult, phase: str = "evaluate", server_round: int | None = None):
    """Per-hospital metrics of one experiment (last round by default)."""
    import pandas as pd

    table = pd.DataFrame([r for r in result.hospitals if r["phase"] == phase])
    if table.empty:
        return table
    server_round = server_round or int(table["round"].max())
    table = table[table["round"] == server_round].copy()
    table["hospital"] = [f"H{int(h) + 1}" for h in table["hospital"]]
    return table.drop(columns=["phase"]).set_index("hospital").sort_index()


def auc_plot(results: dict[str, FLResult], references: dict[str, float] | None = None,
             title: str = "central test AUC per round"):
    """Test AUC of the global model per round, one line per experiment, references dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for name, res in results.items():
        rows = [r for r in res.rounds if r["round"] > 0]
        ax.plot([r["round"] for r in rows], [r["test_auc"] for r in rows], marker="o", label=name)
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{len(results) + i}", label=name)
    ax.set(xlabel="round", ylabel="test AUC", title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def update_deltas(result: FLResult, server_round: int) -> dict[int, dict[str, np.ndarray]]:
    """Each hospital's update in a round: the weights it sent minus the global weights it got."""
    if not result.updates or server_round not in result.updates:
        raise FLConfigError(f"no updates kept for round {server_round} of {result.name!r}; run "
                            "with keep_updates=True")
    start = result.globals[server_round]
    return {k: {n: w - start[n] for n, w in weights.items()}
            for k, weights in result.updates[server_round].items()}


def label_signal(result: FLResult, cfg: FLConfig, positive: int = 1):
    """What each update says about its hospital's labels, with no image in sight.

    For every kept round and hospital: the change of the output layer's bias for class
    ``positive`` minus its mean change over the classes (a hospital rich in that class pushes the
    bias up), beside the hospital's true share of that class. Returns a pandas table.
    """
    import pandas as pd

    rows = []
    for server_round in sorted(result.updates or {}):
        deltas = update_deltas(result, server_round)
        for k, delta in sorted(deltas.items()):
            bias = [n for n, v in delta.items() if n.endswith("bias") and v.ndim == 1][-1]
            change = delta[bias]
            labels = config_data(cfg, k)["train"].tensors[1].numpy()
            rows.append({"round": server_round, "hospital": f"H{k + 1}",
                         "bias signal": float(change[positive] - change.mean()),
                         "true share": float(np.mean(labels == positive))})
    return pd.DataFrame(rows)


def fairness_table(result: FLResult, local_rows: list[dict]):
    """Per hospital: local-only test AUC, the federated model's, the gain, and the federated model
    on the hospital's own validation images."""
    import pandas as pd

    table = pd.DataFrame(local_rows).set_index("hospital")[["n_train", "test_auc"]]
    table = table.rename(columns={"test_auc": "alone: test AUC"})
    table["federated: test AUC"] = result.test_auc
    table["gain"] = table["federated: test AUC"] - table["alone: test AUC"]
    local = hospitals_table(result)
    if not local.empty:
        table["federated: own val AUC"] = local["val-auc"]
        table["federated: own val ACC"] = local["val-acc"]
    return table
