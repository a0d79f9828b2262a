"""Federated learning across hospitals, shaped like a Flower App (chapters 03, 04 and 10).

=============  ==============================================================================
``settings``   :class:`FLConfig`, one experiment's run configuration (a recipe)
``task``       the hospital: its data, the model, local training (FedProx's term), evaluation
``client``     the hospital ``ClientApp`` (Message API)
``server``     the recording strategy, one experiment on a Grid, :class:`FLResult`, the ServerApp
``wire``       :class:`WireTap`: the bytes, and the vectors, that cross the wire
``engine``     Flower's simulation engine (Ray, with retries and clean-up), the in-process grid,
               :func:`simulate` / :func:`run_in_process`
``secagg``     SecAgg+ as one app factory over any local-update function (legacy API)
``deploy``     the deployment engine on loopback (SuperLink + SuperNodes, ``flwr run``)
``analysis``   the references (hospitals alone, pooled), tables, label signal, fairness
``app/``       the Flower App folder that ``flwr run`` reads
=============  ==============================================================================

``pets_lite.fl.client_app`` and ``pets_lite.fl.server_app`` are the Flower App's components,
built on first use (importing Flower takes seconds, and most callers never need it).
"""

from __future__ import annotations

from . import analysis, deploy, engine, secagg, wire
from .analysis import (
    centralized,
    fairness_table,
    hospitals_table,
    label_leak,
    label_signal,
    local_only,
    update_deltas,
)
from .engine import InProcessGrid, RayStartError, quiet_flower, run_apps, run_in_process, simulate
from .server import (
    FLResult,
    RoundStats,
    UpdateHook,
    array_bytes,
    make_strategy,
    model_from_result,
    run_experiment,
    write_result,
)
from .settings import STRATEGIES, FLConfig, FLConfigError
from .task import (
    build_model,
    central_test,
    client_evaluate,
    client_update,
    config_data,
    hospital_data,
    local_train,
    proximal_term,
)
from .wire import WireTap

__all__ = [
    "FLConfig", "FLConfigError", "FLResult", "InProcessGrid", "RayStartError", "RoundStats",
    "STRATEGIES", "UpdateHook", "WireTap", "analysis", "array_bytes", "build_model",
    "central_test", "centralized", "client_evaluate", "client_update", "config_data", "deploy",
    "engine", "fairness_table", "hospital_data", "hospitals_table", "label_leak", "label_signal",
    "local_only", "local_train", "make_strategy", "model_from_result", "proximal_term",
    "quiet_flower", "run_apps", "run_experiment", "run_in_process", "secagg", "simulate",
    "update_deltas", "wire", "write_result",
]

_APPS: dict = {}


def __getattr__(name: str):
    """``client_app`` / ``server_app``: the Flower App's components, built once on first use."""
    if name in ("client_app", "server_app"):
        if name not in _APPS:
            from .client import make_client_app
            from .server import make_server_app

            _APPS[name] = make_client_app() if name == "client_app" else make_server_app()
        return _APPS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
