"""The hybrid pipeline of chapter 10, and the book-wide privacy-utility-cost table.

The pipeline composes the PET modules; it is the only module that imports several of them:

    de-identified DICOM intake (deid) -> federated training across hospitals with DP-SGD inside
    each client (dp) and secure aggregation of the updates (secagg) -> encrypted inference on the
    trained model (he) -> an attack on the released model (attacks).

The table reads what every chapter of the same build recorded (``pets_lite.results.record``) from
the executed notebooks, so each number in it was measured by the chapter that owns it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from . import config, dp, train

# ---------------------------------------------------------------------------------------------
# Federated training with DP-SGD in every client
# ---------------------------------------------------------------------------------------------

@dataclass
class FederatedDPResult:
    """What :func:`federated_dp` measured."""

    rounds: list[dict] = field(default_factory=list)   # per round: test AUC, seconds, bytes
    sigma: list[float] = field(default_factory=list)    # noise multiplier of each hospital
    epsilon: list[float] = field(default_factory=list)  # spent ε of each hospital (RDP)
    delta: float = dp.DELTA
    sample_rates: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    aggregation: str = "fedavg"
    bytes_total: int = 0  # every message the server sent and received (Flower runs)


def state_vector(model: nn.Module) -> torch.Tensor:
    """All parameters of ``model`` as one flat float64 vector (the update a client would send)."""
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


def load_vector(model: nn.Module, vector: torch.Tensor) -> None:
    """Write a flat vector made by :func:`state_vector` back into ``model``'s parameters."""
    total = sum(p.numel() for p in model.parameters())
    if vector.numel() != total:
        raise ValueError(f"vector has {vector.numel()} values, the model {total}")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(vector[offset:offset + n].view_as(p).to(p.dtype))
            offset += n


def weighted_mean(updates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Plain FedAvg aggregation: the server sees every client's update."""
    w = np.asarray(weights, float) / float(np.sum(weights))
    return np.sum([wi * u for wi, u in zip(w, updates)], axis=0)


def federated_dp(hospitals: list[TensorDataset], build, test: TensorDataset, rounds: int,
                 epsilon: float, delta: float = dp.DELTA, local_epochs: int = 1,
                 batch_size: int = 64, lr: float = 2e-3, max_grad_norm: float = 1.0, seed: int = 0,
                 aggregate=None, aggregation_name: str = "fedavg", progress: bool = True):
    """FedAvg in which every hospital trains with DP-SGD (Opacus) on its own patients.

    Each hospital's noise multiplier is calibrated so that all its local steps over all ``rounds``
    spend at most ``(epsilon, delta)`` (RDP accountant, Poisson sampling): a **sample-level**
    guarantee for that hospital's patients against anyone who sees its updates, the aggregate or the
    final model. Hospitals hold disjoint patients, so the guarantees do not compose across them.

    ``aggregate(updates, weights) -> mean update`` replaces plain averaging (secure aggregation
    plugs in here). Returns ``(model, FederatedDPResult)``.
    """
    aggregate = aggregate or weighted_mean
    model, plan, result = _start(hospitals, build, rounds, epsilon, delta, local_epochs,
                                 batch_size, seed, aggregation_name)
    for r in config.progress(range(rounds), desc=f"federated DP rounds ({aggregation_name})",
                             disable=not progress):
        start = time.perf_counter()
        global_vec = state_vector(model)
        updates, weights = [], []
        for k, h in enumerate(hospitals):
            local = build()
            load_vector(local, global_vec)
            dp.train_dp(local, h, None, noise_multiplier=result.sigma[k], delta=delta,
                        epochs=local_epochs, batch_size=plan[k]["batch"],
                        lr=lr, max_grad_norm=max_grad_norm, seed=seed + 1000 * r + k,
                        progress=False)
            updates.append((state_vector(local) - global_vec).numpy())
            weights.append(float(len(h)))
        mean_update = aggregate(updates, weights)
        load_vector(model, global_vec + torch.from_numpy(np.asarray(mean_update, np.float64)))
        metrics = train.evaluate(model, test)
        result.rounds.append({"round": r + 1, "test_auc": metrics["auc"], "test_acc": metrics["acc"],
                              "seconds": time.perf_counter() - start,
                              "upload_bytes": int(sum(u.astype(np.float32).nbytes for u in updates))})
    result.epsilon = _spent(result)
    model.eval()
    return model, result


def _start(hospitals, build, rounds, epsilon, delta, local_epochs, batch_size, seed, aggregation):
    """Shared set-up of both federated DP runs: checks, the per-hospital noise plan, the seeded
    initial model and an empty result. Returns ``(model, plan, result)``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    dp.check_budget(epsilon, delta, min(len(h) for h in hospitals))
    plan = calibrate(hospitals, rounds, epsilon, delta, local_epochs, batch_size)
    config.seed_everything(seed)
    model = build()
    result = FederatedDPResult(delta=delta, aggregation=aggregation,
                               sigma=[p["sigma"] for p in plan],
                               sample_rates=[p["q"] for p in plan], steps=[p["steps"] for p in plan])
    return model, plan, result


def _spent(result: FederatedDPResult) -> list[float]:
    """Each hospital's spent ε (Opacus RDP) for its noise, sample rate and steps."""
    return [dp.opacus_epsilon(s, q, n, result.delta)
            for s, q, n in zip(result.sigma, result.sample_rates, result.steps)]


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


def secure_federated_dp(hospitals: list[TensorDataset], build, test: TensorDataset, rounds: int,
                        epsilon: float, delta: float = dp.DELTA, local_epochs: int = 1,
                        batch_size: int = 64, lr: float = 2e-3, max_grad_norm: float = 1.0,
                        seed: int = 0, num_shares: float = 1.0,
                        reconstruction_threshold: float = 0.6, cpus_per_client: float = 1.0,
                        ray_cpus: int = 2, verbose: bool = False):
    """:func:`federated_dp` on Flower: every hospital a ``NumPyClient`` running DP-SGD, the
    updates summed under SecAgg+ (the server strategy receives only the aggregate).

    SecAgg+ runs through Flower 1.42's legacy API (``LegacyContext`` + ``DefaultWorkflow`` with
    ``SecAggPlusWorkflow``), the only path that has it (see :mod:`pets_lite.secagg`). Hospitals
    are weighted equally in the secure sum. Returns ``(model, FederatedDPResult)``.
    """
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from . import secagg

    if len(hospitals) < 3:
        raise ValueError("secure aggregation with dropout tolerance needs >= 3 hospitals")
    model, plan, result = _start(hospitals, build, rounds, epsilon, delta, local_epochs,
                                 batch_size, seed, "SecAgg+")
    initial = [p.detach().numpy().copy() for p in model.parameters()]

    class Hospital(NumPyClient):
        def __init__(self, pid: int):
            self.pid = pid

        def fit(self, parameters, cfg):
            local = build()
            with torch.no_grad():
                for p, v in zip(local.parameters(), parameters):
                    p.copy_(torch.from_numpy(v))
            dp.train_dp(local, hospitals[self.pid], None, noise_multiplier=plan[self.pid]["sigma"],
                        delta=delta, epochs=local_epochs, batch_size=plan[self.pid]["batch"],
                        lr=lr, max_grad_norm=max_grad_norm,
                        seed=seed + 1000 * int(cfg["server_round"]) + self.pid, progress=False)
            return [p.detach().numpy() for p in local.parameters()], 1, {}

    def client_fn(context: Context):
        torch.set_num_threads(1)
        return Hospital(int(context.node_config["partition-id"])).to_client()

    counter = secagg.SecAggResult("hybrid", True, len(hospitals))

    class Recorder(FedAvg):
        def __init__(self):
            super().__init__(fraction_fit=1.0, fraction_evaluate=0.0,
                             min_fit_clients=len(hospitals), min_available_clients=len(hospitals),
                             min_evaluate_clients=0, initial_parameters=ndarrays_to_parameters(initial),
                             on_fit_config_fn=lambda r: {"server_round": r})
            self.t0 = 0.0

        def configure_fit(self, server_round, parameters, client_manager):
            self.t0 = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, fit_results, failures):
            # Flower hands the strategy one result slot per hospital, each holding the same
            # unmasked aggregate: count the distinct updates it actually received.
            counter.seen.append([parameters_to_ndarrays(r.parameters) for _, r in fit_results])
            params, metrics = super().aggregate_fit(server_round, fit_results, failures)
            with torch.no_grad():
                for p, v in zip(model.parameters(), parameters_to_ndarrays(params)):
                    p.copy_(torch.from_numpy(v))
            m = train.evaluate(model, test)
            result.rounds.append({"round": server_round, "test_auc": m["auc"], "test_acc": m["acc"],
                                  "seconds": time.perf_counter() - self.t0,
                                  "updates_seen_by_server": counter.distinct_seen(server_round),
                                  "bytes_so_far": counter.bytes_total})
            return params, metrics

    app = ServerApp()

    @app.main()
    def _main(grid, context):
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                            strategy=Recorder())
        # Each hospital reports weight 1: max_weight=1 keeps SecAgg+'s quantisation at full
        # precision (the default 1000 scales updates down 1000x first; see pets_lite.secagg).
        workflow = SecAggPlusWorkflow(num_shares=num_shares,
                                      reconstruction_threshold=reconstruction_threshold,
                                      max_weight=1.0)
        # secagg's byte-counting Grid proxy: what crosses the wire, masked updates included.
        DefaultWorkflow(fit_workflow=workflow)(secagg._CountingGrid(grid, counter), ctx)

    secagg.run_with_retries(app, ClientApp(client_fn=client_fn, mods=[secaggplus_mod]),
                            len(hospitals), cpus_per_client, ray_cpus, verbose,
                            started=lambda: bool(result.rounds))
    if len(result.rounds) != rounds:
        raise RuntimeError(f"the simulation finished {len(result.rounds)} of {rounds} rounds; "
                           "rerun with verbose=True to see Flower's log")
    result.epsilon = _spent(result)
    result.bytes_total = counter.bytes_total
    model.eval()
    return model, result


# ---------------------------------------------------------------------------------------------
# The book-wide table
# ---------------------------------------------------------------------------------------------

def chapter_results(folder: str | os.PathLike | None = None) -> dict[str, dict]:
    """``{notebook stem: recorded values}`` for every executed notebook of this build."""
    import nbformat

    from . import nbrun

    folder = Path(folder) if folder is not None else config.executed_dir()
    if folder is None or not folder.is_dir():
        return {}
    return {p.stem: nbrun.glued(nbformat.read(p, as_version=4))
            for p in sorted(folder.glob("*.ipynb"))}


def _find(results: dict[str, dict], prefix: str) -> dict:
    """The recorded values of the chapter whose notebook name starts with ``prefix`` ({} if none)."""
    for stem, values in results.items():
        if stem.startswith(prefix):
            return values
    return {}


def _at(values: dict, key: str, epsilon: float | None = None, eps_key: str = "epsilons"):
    """``values[key]``, or its entry at ``epsilon`` when it is a list aligned with ``eps_key``."""
    value = values.get(key)
    if epsilon is None or not isinstance(value, list):
        return value
    grid = values.get(eps_key) or []
    for e, v in zip(grid, value):
        if abs(float(e) - epsilon) < 1e-9:
            return v
    return None


#: What each configuration of the book needs from the chapters' recorded values.
#: Columns: privacy (eps, LiRA TPR at 0.1% FPR, gradient-inversion SSIM, who is trusted),
#: utility (test AUC, ACC), cost (seconds, MB on the wire).
TABLE_SPEC = [
    ("non-private baseline", "00", lambda c, a: {
        "epsilon": math.inf, "lira_tpr_0.1%": a.get("tpr_0001_baseline"),
        "test_auc": c.get("test_auc"), "test_acc": c.get("test_acc"),
        "seconds": c.get("train_seconds"), "cost_note": "s of training",
        "trusted": "the trainer sees every image"}),
    ("DP-SGD ε=8", "02", lambda c, a: {
        "epsilon": _at(c, "eps_spent_by_eps", 8.0), "lira_tpr_0.1%": a.get("tpr_0001_dp8"),
        "test_auc": _at(c, "test_auc_by_eps", 8.0),
        "trusted": "the trainer sees every image; the model is safe to release"}),
    ("DP-SGD ε=1", "02", lambda c, a: {
        "epsilon": _at(c, "eps_spent_by_eps", 1.0), "lira_tpr_0.1%": a.get("tpr_0001_dp1"),
        "test_auc": _at(c, "test_auc_by_eps", 1.0),
        "trusted": "the trainer sees every image; the model is safe to release"}),
    ("FedAvg (3 hospitals, α=0.5)", "03", lambda c, a: {
        "test_auc": c.get("auc_fedavg_a0.5"), "seconds": c.get("round_seconds"),
        "mb_on_wire": _mb(c.get("bytes_per_round")), "cost_note": "s and MB per round",
        "trusted": "the server sees every hospital's update"}),
    ("FedAvg + SecAgg+", "04", lambda c, a: {
        "inversion_ssim": _worst(c.get("ssim_aggregate")),
        "seconds": c.get("secagg_time_ratio"), "mb_on_wire": c.get("secagg_bytes_ratio"),
        "cost_note": "× FedAvg's round time and bytes",
        "trusted": "a threshold of non-colluding hospitals; the server sees only the sum"}),
    ("FedAvg update, no defence (attack)", "04", lambda c, a: {
        "inversion_ssim": c.get("ssim_b1"),
        "trusted": "nobody should: a single update is inverted"}),
    ("split learning (vanilla)", "08", lambda c, a: {
        "inversion_ssim": (c.get("ssim_by_cut") or [None])[0], "test_auc": c.get("vanilla_test_auc"),
        "test_acc": c.get("vanilla_test_acc"), "mb_on_wire": c.get("vanilla_mb_per_epoch"),
        "cost_note": "MB per epoch",
        "trusted": "the server, with cut-layer activations (invertible)"}),
    ("HE inference (CKKS, batched)", "05", lambda c, a: {
        "test_auc": c.get("enc_auc"), "seconds": c.get("batched_s_per_image"),
        "cost_note": "s per image (batched); MB = public context",
        "mb_on_wire": c.get("public_context_mib_batched"),
        "trusted": "nobody: the server computes on ciphertexts"}),
    ("MPC inference (CrypTen, 2 parties)", "06", lambda c, a: {
        "test_auc": c.get("private_auc"), "seconds": c.get("inference_seconds_per_image"),
        "cost_note": "s per image; MB for the whole test set",
        "mb_on_wire": _mb(c.get("inference_bytes")),
        "trusted": "the two parties do not collude"}),
    ("TEE inference (simulated attestation)", "09", lambda c, a: {
        "test_auc": c.get("enclave_auc"),
        "trusted": "the chip vendor; no hardware isolation in this simulation"}),
]


def _worst(by_clients):
    """The highest (worst-case) SSIM over the numbers of clients an aggregate was attacked at."""
    if not by_clients:
        return None
    return max(float(v) for v in by_clients.values())


def _mb(value):
    return None if value is None else float(value) / 1e6


def book_table(results: dict[str, dict], extra_rows: list[dict] = ()) -> list[dict]:
    """One row per configuration: what its chapter recorded in this build, plus ``extra_rows``
    (the hybrid, measured by chapter 10 itself). A chapter that did not run gives no row."""
    attacks_ch = _find(results, "07")
    rows = []
    for name, prefix, pick in TABLE_SPEC:
        chapter = _find(results, prefix)
        if not chapter:
            continue
        # peak memory is the chapter's (its kernel's, measured by nbrun.execute), not the row's alone
        row = {"configuration": name, "chapter": prefix,
               "peak_mib": chapter.get("peak_memory_mib"), **pick(chapter, attacks_ch)}
        rows.append(row)
    rows.extend(extra_rows)
    return rows

