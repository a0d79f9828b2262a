"""Secure aggregation with Flower's SecAgg+ (Bell et al. 2020): the server learns only the sum.

Each hospital masks its update with pairwise masks (agreed by Diffie-Hellman with its neighbours
in a random graph) plus a private mask, and secret-shares the mask seeds (Shamir). The masks
cancel in the sum; if a hospital drops out after sharing, the others' shares rebuild its pairwise
masks, so the round still completes without it.

Why the LEGACY API: in Flower 1.42 SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) exists
only for the legacy ``ServerApp`` path (``LegacyContext`` + ``DefaultWorkflow`` driving a
``flwr.server.strategy`` strategy, ``NumPyClient`` clients); the Message-API strategies of
``flwr.serverapp`` (:mod:`pets_lite.fl.server`) have no secure-aggregation workflow yet.

:func:`make_apps` is the one app factory of this path. It takes the hospitals' local computation
as a function, :data:`LocalUpdate` (chapter 04: one step of the gradient-inversion model; chapter
10: DP-SGD), and runs experiments with SecAgg+ or, for comparison, plain FedAvg over the same
hospitals. It records what the server's strategy is handed (one aggregate with SecAgg+, every
update without) and, through a :class:`~pets_lite.fl.wire.WireTap`, what crossed the wire: bytes,
exchanges and, with ``keep_wire``, the vectors every hospital uploaded (:meth:`SecAggResult.
wire_leak` measures how much of each hospital's update they reveal). :func:`simulate` runs the
apps on Flower's simulation engine or the in-process grid (:func:`pets_lite.fl.engine.run_apps`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .engine import finished, run_apps
from .settings import FLConfigError
from .wire import WireTap, sent_vectors, update_correlation

#: ``local_update(hospital, global parameters, server round) -> the hospital's new parameters``
#: (lists of NumPy arrays). Every hospital reports weight 1: the aggregate is the plain mean.
LocalUpdate = Callable[[int, list[np.ndarray], int], list[np.ndarray]]


def model_parameters(model: torch.nn.Module) -> list[np.ndarray]:
    """A model's parameters as NumPy arrays, in order (what a ``NumPyClient`` sends)."""
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


def load_parameters(model: torch.nn.Module, parameters: list[np.ndarray]) -> None:
    """Write :func:`model_parameters` back into ``model`` (shapes must agree)."""
    params = list(model.parameters())
    if len(params) != len(parameters):
        raise FLConfigError(f"{len(parameters)} arrays for a model with {len(params)} parameters")
    with torch.no_grad():
        for p, v in zip(params, parameters):
            if tuple(p.shape) != tuple(np.shape(v)):
                raise FLConfigError(f"array of shape {np.shape(v)} for a parameter of shape "
                                    f"{tuple(p.shape)}")
            p.copy_(torch.as_tensor(np.asarray(v), dtype=p.dtype))


def clip_and_noise(update: list[torch.Tensor], clip: float, noise_multiplier: float,
                   seed: int = 0) -> list[torch.Tensor]:
    """Clip the whole update to L2 norm ``clip`` and add N(0, (noise_multiplier * clip)^2) noise
    (client-side DP before masking: the second defence)."""
    if clip <= 0 or noise_multiplier < 0:
        raise FLConfigError(f"clip must be > 0 and noise_multiplier >= 0, got clip={clip}, "
                            f"noise_multiplier={noise_multiplier}")
    norm = float(torch.sqrt(sum((u.double() ** 2).sum() for u in update)))
    scale = min(1.0, clip / (norm + 1e-12))
    gen = torch.Generator().manual_seed(seed)
    return [u * scale + noise_multiplier * clip * torch.randn(u.shape, generator=gen)
            for u in update]


@dataclass(frozen=True)
class Experiment:
    """One federated run over the simulation's hospitals.

    ``secure=False`` is plain FedAvg on the same path. ``drop_client`` (a partition id, -1 for
    none) fails during training in round ``drop_round``: with SecAgg+ that is after the key and
    share exchange, so the protocol must rebuild its masks.
    """

    name: str
    secure: bool = True
    rounds: int = 1
    drop_client: int = -1
    drop_round: int = 1


@dataclass
class SecAggResult:
    """What one experiment measured.

    ``rounds[r - 1]``: seconds, bytes sent / received (serialised messages), exchanges (message
    rounds), failures, the number of distinct updates the strategy was handed, and what
    ``evaluate`` returned. ``seen[r - 1]``: the updates the strategy was handed;
    ``aggregates[r - 1]``: the global parameters after round r; ``wire[r - 1]``: the replies that
    crossed the wire in round r (with ``keep_wire``).
    """

    name: str
    secure: bool
    n_clients: int
    initial: list[np.ndarray]
    rounds: list[dict] = field(default_factory=list)
    seen: list[list[list[np.ndarray]]] = field(default_factory=list)
    aggregates: list[list[np.ndarray]] = field(default_factory=list)
    wire: list[list] = field(default_factory=list)
    engine: str = "ray"

    def distinct_seen(self, server_round: int = 1) -> int:
        """How many different updates the strategy was handed in a round.

        Plain FedAvg: one per hospital. SecAgg+: one, since Flower hands the strategy every
        hospital's result slot filled with the same unmasked aggregate (legacy compatibility).
        That counts what the strategy API sees, not what the server process received: for that
        see :meth:`wire_leak`.
        """
        return distinct(self.seen[server_round - 1])

    @property
    def round_seconds(self) -> list[float]:
        return [r["seconds"] for r in self.rounds]

    @property
    def failures(self) -> list[int]:
        return [r["failures"] for r in self.rounds]

    @property
    def bytes_total(self) -> int:
        """Bytes of every message the server sent and received, all rounds."""
        return int(sum(r["bytes_sent"] + r["bytes_received"] for r in self.rounds))

    def start_of(self, server_round: int = 1) -> list[np.ndarray]:
        """The global parameters a round started from."""
        return self.initial if server_round == 1 else self.aggregates[server_round - 2]

    def aggregate_update(self, server_round: int = 1, lr: float = 0.1) -> list[torch.Tensor]:
        """The mean client update (as a gradient) the server can compute after ``server_round``."""
        before, after = self.start_of(server_round), self.aggregates[server_round - 1]
        return [torch.from_numpy((b - a) / lr).float() for b, a in zip(before, after)]

    def wire_vectors(self, server_round: int = 1) -> list[np.ndarray]:
        """Every parameter vector the hospitals sent in a round, as it crossed the wire (plain
        FedAvg: their new weights; SecAgg+: their masked vectors). Needs ``keep_wire``."""
        if len(self.wire) < server_round:
            raise FLConfigError(f"{self.name}: no replies kept for round {server_round}; run "
                                "with keep_wire=True")
        size = flat(self.initial).size
        vectors = [v for m in self.wire[server_round - 1] for v in sent_vectors(m)
                   if v.size == size]
        if not vectors:
            raise FLConfigError(f"{self.name}: no parameter vector crossed the wire in round "
                                f"{server_round}")
        return vectors

    def wire_leak(self, new_parameters: list[list[np.ndarray]], server_round: int = 1
                  ) -> list[float]:
        """For each hospital k, the largest |correlation| between its true update
        (``new_parameters[k]`` minus the round's start) and any vector on the wire in that round
        (:func:`pets_lite.fl.wire.update_correlation`). Plain FedAvg: 1 for every hospital;
        SecAgg+: about 0 (within a few ``1/sqrt(parameters)``): only masked vectors cross."""
        start = flat(self.start_of(server_round))
        vectors = self.wire_vectors(server_round)
        return [max(abs(update_correlation(v, start, flat(new) - start)) for v in vectors)
                for new in new_parameters]

    def wire_vs_aggregate(self, server_round: int = 1) -> list[float]:
        """For each vector on the wire in a round, its |correlation| with the round's aggregate
        update, which the server learns anyway. Needs no knowledge of the hospitals' updates:
        a plain FedAvg reply is one of the terms of the mean (at least about ``1/sqrt(n)`` even
        for independent updates); a SecAgg+ masked vector is independent of it (about 0)."""
        start = flat(self.start_of(server_round))
        aggregate = flat(self.aggregates[server_round - 1]) - start
        return [abs(update_correlation(v, start, aggregate))
                for v in self.wire_vectors(server_round)]


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    """A list of arrays as one float64 vector."""
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def distinct(updates: list[list[np.ndarray]]) -> int:
    """How many different parameter lists ``updates`` holds."""
    unique: list[list[np.ndarray]] = []
    for params in updates:
        if not any(all(np.array_equal(a, b) for a, b in zip(params, u)) for u in unique):
            unique.append(params)
    return len(unique)


def failed_hospitals(failures: list) -> int:
    """How many hospitals failed in a round. Flower 1.42's ``SecAggPlusWorkflow`` lists a dropped
    client's error twice (its masked-vector stage loops over the replies twice; no upstream issue
    known to us), so an error counts once however often it is listed."""
    return len({id(f.args[0]) if isinstance(f, Exception) and f.args else id(f)
                for f in failures})


def check_experiments(n_clients: int, experiments: list[Experiment]) -> None:
    """Refuse experiments the hospitals cannot run (named, with what to do)."""
    if n_clients < 2:
        raise FLConfigError(f"secure aggregation needs at least 2 clients, got {n_clients}")
    if not experiments:
        raise FLConfigError("simulate() needs at least one Experiment")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise FLConfigError(f"experiment names must be unique, got {names}")
    for e in experiments:
        if e.rounds < 1:
            raise FLConfigError(f"{e.name}: rounds must be >= 1")
        if e.drop_client >= n_clients:
            raise FLConfigError(f"{e.name}: drop_client={e.drop_client} but there are only "
                                f"{n_clients} clients (ids 0..{n_clients - 1})")
        if e.secure and e.drop_client >= 0 and n_clients < 3:
            raise FLConfigError(f"{e.name}: a SecAgg+ round with a dropout needs >= 3 clients "
                                "(the survivors must hold enough shares)")


def make_apps(local_update: LocalUpdate, initial: list[np.ndarray], n_clients: int,
              experiments: list[Experiment], num_shares: float = 1.0,
              reconstruction_threshold: float = 0.6, evaluate=None, keep_wire: bool = False):
    """The ``ServerApp`` and ``ClientApp`` that run ``experiments`` one after another from the
    global parameters ``initial``; returns ``(server_app, client_app, results)``, ``results``
    filling up as the experiments finish.

    ``evaluate(experiment, server_round, parameters) -> dict`` (optional) scores each round's
    aggregate on the server. ``num_shares`` / ``reconstruction_threshold`` are SecAgg+'s (floats:
    fractions; with 2 clients an integer ``num_shares`` must be > 2, so keep fractions).
    """
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    experiments = list(experiments)
    check_experiments(n_clients, experiments)
    initial = [np.asarray(p, np.float32).copy() for p in initial]
    by_name = {e.name: e for e in experiments}
    driver = os.getpid()

    class Hospital(NumPyClient):
        def __init__(self, pid: int):
            self.pid = pid

        def fit(self, parameters, config):
            exp, server_round = by_name[str(config["experiment"])], int(config["server_round"])
            if self.pid == exp.drop_client and server_round == exp.drop_round:
                raise RuntimeError(f"hospital {self.pid} drops out (simulated)")
            new = local_update(self.pid, [np.asarray(p) for p in parameters], server_round)
            return [np.asarray(v, p.dtype) for v, p in zip(new, parameters)], 1, {}

    def client_fn(context: Context):
        if os.getpid() != driver:  # a Ray worker: one thread per hospital
            torch.set_num_threads(1)
        return Hospital(int(context.node_config["partition-id"])).to_client()

    def only_secagg_messages(msg, ctxt, call_next):
        # secaggplus_mod expects its config record on every training message; plain FedAvg
        # rounds of the same simulation have none, so they bypass it.
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            return secaggplus_mod(msg, ctxt, call_next)
        return call_next(msg, ctxt)

    client_app = ClientApp(client_fn=client_fn, mods=[only_secagg_messages])
    results: dict[str, SecAggResult] = {}

    class Recorder(FedAvg):
        def __init__(self, exp: Experiment, result: SecAggResult, tap: WireTap):
            super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n_clients,
                             min_available_clients=n_clients, min_evaluate_clients=0,
                             initial_parameters=ndarrays_to_parameters(initial),
                             on_fit_config_fn=lambda r: {"experiment": exp.name,
                                                         "server_round": r})
            self.exp, self.result, self.tap = exp, result, tap
            self.t0, self.mark = 0.0, tap.mark()

        def configure_fit(self, server_round, parameters, client_manager):
            self.t0, self.mark = time.perf_counter(), self.tap.mark()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, fit_results, failures):
            seen = [parameters_to_ndarrays(r.parameters) for _, r in fit_results]
            params, metrics = super().aggregate_fit(server_round, fit_results, failures)
            aggregate = parameters_to_ndarrays(params)
            traffic = self.tap.since(self.mark)
            row = {"round": server_round, "seconds": time.perf_counter() - self.t0,
                   "bytes_sent": traffic["bytes_sent"],
                   "bytes_received": traffic["bytes_received"],
                   "exchanges": traffic["exchanges"], "failures": failed_hospitals(failures),
                   "distinct_seen": distinct(seen)}
            if evaluate is not None:
                row.update(evaluate(self.exp.name, server_round, aggregate))
            self.result.rounds.append(row)
            self.result.seen.append(seen)
            self.result.aggregates.append(aggregate)
            if keep_wire:
                self.result.wire.append([m for _, m in traffic["replies"]])
            return params, metrics

    server_app = ServerApp()

    @server_app.main()
    def main(grid, context):
        for exp in experiments:
            result = SecAggResult(exp.name, exp.secure, n_clients, initial)
            tap = WireTap(grid, keep=keep_wire)
            ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=exp.rounds),
                                strategy=Recorder(exp, result, tap))
            fit_workflow = SecAggPlusWorkflow(
                num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
                # Each client reports weight 1; the default max_weight=1000 would scale
                # updates by 1/1000 before quantisation and cost ~1000x precision (measured).
                max_weight=1.0) if exp.secure else None
            DefaultWorkflow(fit_workflow=fit_workflow)(tap, ctx)
            results[exp.name] = result

    return server_app, client_app, results


def simulate(local_update: LocalUpdate, initial: list[np.ndarray], n_clients: int,
             experiments: list[Experiment], engine: str = "ray", fallback: bool = False,
             evaluate=None, keep_wire: bool = False, num_shares: float = 1.0,
             reconstruction_threshold: float = 0.6, cpus_per_client: float = 1.0,
             ray_cpus: int | None = None, verbose: bool = False) -> dict[str, SecAggResult]:
    """Run ``experiments`` one after another in one simulation over ``n_clients`` hospitals (see
    :func:`make_apps`); ``engine`` / ``fallback`` as in :func:`pets_lite.fl.engine.run_apps`."""
    server_app, client_app, results = make_apps(
        local_update, initial, n_clients, experiments, num_shares=num_shares,
        reconstruction_threshold=reconstruction_threshold, evaluate=evaluate,
        keep_wire=keep_wire)
    used = run_apps(server_app, client_app, n_clients, engine=engine, fallback=fallback,
                    verbose=verbose, started=lambda: bool(results),
                    cpus_per_client=cpus_per_client, ray_cpus=ray_cpus)
    return finished(results, [e.name for e in experiments], used)
