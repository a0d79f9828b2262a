"""Secure aggregation with Flower's SecAgg+ (Bell et al. 2020): the server learns only the sum.

Each hospital masks its update with pairwise masks (agreed by Diffie-Hellman with its neighbours
in a random graph) plus a private mask, and secret-shares the mask seeds (Shamir). The masks
cancel in the sum; if a hospital drops out after sharing, the others' shares rebuild its pairwise
masks, so the round still completes without it.

Why the LEGACY API: in Flower 1.42 SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) exists
only for the legacy ``ServerApp`` path (``LegacyContext`` + ``DefaultWorkflow`` driving a
``flwr.server.strategy`` strategy, ``NumPyClient`` clients); the Message-API strategies of
``flwr.serverapp`` (used by :mod:`pets_lite.fl`) have no secure-aggregation workflow yet. So this
module runs its own, separate, legacy simulation.

:func:`simulate` runs several experiments (plain FedAvg, FedAvg + SecAgg+, a round with a dropout)
in ONE Ray start-up, over the same hospitals, and records what the server's strategy receives
(n individual updates without SecAgg+, one aggregate with it), round times and bytes exchanged.
Every hospital's update is one local computation of :func:`pets_lite.inversion.client_update`
(so the gradient-inversion attack can be run on what the server sees).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import inversion

# ---------------------------------------------------------------------------------------------
# Client-side DP: the second defence
# ---------------------------------------------------------------------------------------------


def clip_and_noise(update: list[torch.Tensor], clip: float, noise_multiplier: float,
                   seed: int = 0) -> list[torch.Tensor]:
    """Clip the whole update to L2 norm ``clip`` and add N(0, (noise_multiplier * clip)^2) noise."""
    if clip <= 0 or noise_multiplier < 0:
        raise ValueError(f"clip must be > 0 and noise_multiplier >= 0, got clip={clip}, "
                         f"noise_multiplier={noise_multiplier}")
    norm = float(torch.sqrt(sum((u.double() ** 2).sum() for u in update)))
    scale = min(1.0, clip / (norm + 1e-12))
    gen = torch.Generator().manual_seed(seed)
    return [u * scale + noise_multiplier * clip * torch.randn(u.shape, generator=gen)
            for u in update]


# ---------------------------------------------------------------------------------------------
# Experiments and results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """One federated run over the simulation's hospitals.

    ``drop_client`` (a partition id, -1 for none) fails during training in round ``drop_round``:
    with SecAgg+ that is after the key and share exchange, so the protocol must rebuild its masks.
    ``dp_clip`` > 0 makes every client clip its update and add Gaussian noise before sending.
    """

    name: str
    secure: bool = True
    rounds: int = 1
    drop_client: int = -1
    drop_round: int = 1
    dp_clip: float = 0.0
    dp_noise: float = 0.0


@dataclass
class SecAggResult:
    """What one experiment measured; ``seen[r]`` is the list of updates the strategy received."""

    name: str
    secure: bool
    n_clients: int
    round_seconds: list[float] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    seen: list[list[list[np.ndarray]]] = field(default_factory=list)
    aggregates: list[list[np.ndarray]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    initial: list[np.ndarray] = field(default_factory=list)

    def distinct_seen(self, server_round: int = 1) -> int:
        """How many different updates the strategy received in a round.

        Plain FedAvg: one per hospital. SecAgg+: one, since Flower hands the strategy every
        hospital's result slot filled with the same unmasked aggregate (legacy compatibility).
        """
        unique: list[list[np.ndarray]] = []
        for params in self.seen[server_round - 1]:
            if not any(all(np.array_equal(a, b) for a, b in zip(params, u)) for u in unique):
                unique.append(params)
        return len(unique)

    @property
    def bytes_total(self) -> int:
        """Bytes of every message content the server sent and received, all rounds."""
        return self.bytes_sent + self.bytes_received

    def aggregate_update(self, server_round: int = 1, lr: float = 0.1) -> list[torch.Tensor]:
        """The mean client update (as a gradient) the server can compute after ``server_round``."""
        before = self.initial if server_round == 1 else self.aggregates[server_round - 2]
        after = self.aggregates[server_round - 1]
        return [torch.from_numpy((b - a) / lr).float() for b, a in zip(before, after)]


def content_bytes(content) -> int:
    """Bytes of a Flower ``RecordDict``: arrays, config values (bytes, str, lists) and metrics."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(arr.data) for arr in record.values())
    for record in content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            for v in items:
                total += len(v) if isinstance(v, (bytes, str)) else 8
    for record in content.metric_records.values():
        total += 8 * sum(len(v) if isinstance(v, list) else 1 for v in record.values())
    return total


class _CountingGrid:
    """A Grid proxy that adds up the bytes of every message the server sends and receives."""

    def __init__(self, grid, result: SecAggResult):
        self._grid, self._result = grid, result

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *args, **kwargs):
        messages = list(messages)
        self._result.bytes_sent += sum(content_bytes(m.content) for m in messages)
        replies = list(self._grid.send_and_receive(messages, *args, **kwargs))
        self._result.bytes_received += sum(content_bytes(m.content) for m in replies
                                           if not m.has_error())
        return replies


def _check(images: torch.Tensor, labels: torch.Tensor, experiments: list[Experiment]) -> None:
    if images.ndim != 5 or labels.ndim != 2 or images.shape[:2] != labels.shape:
        raise ValueError("images must be (clients, batch, C, H, W) with labels (clients, batch); "
                         f"got {tuple(images.shape)} and {tuple(labels.shape)}")
    if len(images) < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {len(images)}")
    if not experiments:
        raise ValueError("simulate() needs at least one Experiment")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must be unique, got {names}")
    for e in experiments:
        if e.rounds < 1:
            raise ValueError(f"{e.name}: rounds must be >= 1")
        if e.drop_client >= len(images):
            raise ValueError(f"{e.name}: drop_client={e.drop_client} but there are only "
                             f"{len(images)} clients (ids 0..{len(images) - 1})")
        if e.secure and e.drop_client >= 0 and len(images) < 3:
            raise ValueError(f"{e.name}: a SecAgg+ round with a dropout needs >= 3 clients "
                             "(the survivors must hold enough shares)")


def run_with_retries(server_app, client_app, num_supernodes: int, cpus_per_client: float = 1.0,
                     ray_cpus: int = 2, verbose: bool = False, started=lambda: False) -> None:
    """``flwr.simulation.run_simulation`` on Ray, started again (up to 3 times) when Ray's node
    fails to start on a loaded machine and nothing has run yet (``started()`` is false)."""
    from flwr.simulation import run_simulation

    from .fl import _ray_start_failed, quiet_flower

    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
               "init_args": {"num_cpus": ray_cpus, "logging_level": "ERROR",
                             "log_to_driver": verbose, "include_dashboard": False}}
    with quiet_flower(verbose):
        for attempt in range(1, 4):
            try:
                run_simulation(server_app=server_app, client_app=client_app,
                               num_supernodes=num_supernodes, backend_config=backend,
                               verbose_logging=verbose)
                return
            except RuntimeError as exc:  # Ray's 15 s agent start-up on a loaded machine
                if started() or attempt == 3 or not _ray_start_failed(exc):
                    raise


def simulate(images: torch.Tensor, labels: torch.Tensor, experiments: list[Experiment],
             model_kind: str = "mlp", steps: int = 1, lr: float = 0.1, seed: int = 0,
             num_shares: float = 1.0, reconstruction_threshold: float = 0.6,
             cpus_per_client: float = 1.0, ray_cpus: int = 2, verbose: bool = False
             ) -> dict[str, SecAggResult]:
    """Run ``experiments`` one after another in one Flower (legacy API) simulation.

    ``images[i]`` / ``labels[i]`` is hospital i's local batch. Every experiment starts from the
    same initial :class:`~pets_lite.inversion.InversionNet` (seed ``seed``); each client runs
    ``steps`` SGD steps of size ``lr`` and reports one example, so the aggregate is the plain mean.
    ``num_shares`` / ``reconstruction_threshold`` are SecAgg+'s (floats: fractions; with 2
    clients an integer ``num_shares`` must be > 2, so keep fractions).
    """
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    experiments = list(experiments)
    _check(images, labels, experiments)
    n = len(images)
    torch.manual_seed(seed)
    model = inversion.InversionNet(kind=model_kind)
    initial = [p.detach().numpy().copy() for p in model.parameters()]
    xs, ys = images.numpy(), labels.numpy()
    by_name = {e.name: e for e in experiments}

    class Hospital(NumPyClient):
        def __init__(self, pid: int):
            self.pid = pid

        def fit(self, parameters, config):
            exp = by_name[str(config["experiment"])]
            if self.pid == exp.drop_client and int(config["server_round"]) == exp.drop_round:
                raise RuntimeError(f"hospital {self.pid} drops out (simulated)")
            net = inversion.InversionNet(kind=model_kind)
            with torch.no_grad():
                for p, v in zip(net.parameters(), parameters):
                    p.copy_(torch.from_numpy(v))
            upd = inversion.client_update(net, torch.from_numpy(xs[self.pid]),
                                          torch.from_numpy(ys[self.pid]), steps=steps, lr=lr)
            if exp.dp_clip > 0:
                upd = clip_and_noise(upd, exp.dp_clip, exp.dp_noise,
                                     seed=seed * 7919 + 131 * self.pid + int(config["server_round"]))
            new = [v - lr * u.numpy() for v, u in zip(parameters, upd)]
            return new, 1, {"hospital": self.pid}

    def client_fn(context: Context):
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
        def __init__(self, exp: Experiment, result: SecAggResult):
            super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                             min_available_clients=n, min_evaluate_clients=0,
                             initial_parameters=ndarrays_to_parameters(initial),
                             on_fit_config_fn=lambda r: {"experiment": exp.name,
                                                         "server_round": r})
            self.result, self.t0 = result, 0.0

        def configure_fit(self, server_round, parameters, client_manager):
            self.t0 = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, fit_results, failures):
            self.result.seen.append([parameters_to_ndarrays(r.parameters) for _, r in fit_results])
            self.result.failures.append(len(failures))
            params, metrics = super().aggregate_fit(server_round, fit_results, failures)
            self.result.aggregates.append(parameters_to_ndarrays(params))
            self.result.round_seconds.append(time.perf_counter() - self.t0)
            return params, metrics

    app = ServerApp()

    @app.main()
    def _main(grid, context):
        for exp in experiments:
            res = SecAggResult(exp.name, exp.secure, n, initial=initial)
            ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=exp.rounds),
                                strategy=Recorder(exp, res))
            fit_workflow = SecAggPlusWorkflow(
                num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
                # Each client reports 1 example; the default max_weight=1000 would scale
                # updates by 1/1000 before quantisation and cost ~1000x precision (measured).
                max_weight=1.0) if exp.secure else None
            DefaultWorkflow(fit_workflow=fit_workflow)(_CountingGrid(grid, res), ctx)
            results[exp.name] = res

    run_with_retries(app, client_app, n, cpus_per_client, ray_cpus, verbose,
                     started=lambda: bool(results))
    missing = [e.name for e in experiments if e.name not in results]
    if missing:
        raise RuntimeError(f"the simulation ended before {missing} finished; rerun with "
                           "verbose=True to see Flower's log")
    return results
