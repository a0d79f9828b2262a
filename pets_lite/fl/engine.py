"""Where the apps run: Flower's simulation engine (Ray) with retries and clean-up, and an
in-process Grid; :func:`simulate` runs Message-API experiments on either.

Every simulation of the package goes through :func:`run_apps`: the chapters' federations
(:func:`simulate`), SecAgg+ (:mod:`pets_lite.fl.secagg`) and the hybrid of chapter 10. Ray's
raylet gives its agents a fixed 15 s to start (ray-project/ray#65983), so on an overloaded machine
the start can fail: :func:`run_on_ray` stops what a failed start left running and tries again, and
with ``fallback=True`` the same apps then run on an :class:`InProcessGrid` (with a printed
warning). The deployment engine (SuperLink and SuperNodes) is :mod:`pets_lite.fl.deploy`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .. import config
from .client import make_client_app
from .server import FLResult, UpdateHook, run_experiment
from .settings import FLConfig, FLConfigError
from .wire import wire_copy

ENGINES = ("ray", "in-process")


class RayStartError(RuntimeError):
    """Ray's node did not start (nothing ran); the message says how often it was tried."""


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


# ---------------------------------------------------------------------------------------------
# An in-process Grid: the real ClientApp and strategies, no engine (tests; machines without Ray)
# ---------------------------------------------------------------------------------------------

@dataclass
class InProcessRun:
    """The little of Flower's ``Run`` that the legacy workflows read from a Grid."""

    run_id: int = 1


class InProcessGrid:
    """A Flower ``Grid`` that hands each message to a ``ClientApp`` in this process, node by node.

    It keeps the engines' contract: every message and reply crosses a (simulated) wire, i.e. it is
    serialised with Flower's protobuf and parsed back, so neither side can touch the other's
    objects (SecAgg+'s client mod edits the message it receives); a ``ClientApp`` that raises
    yields an error reply, never an exception in the ``ServerApp``. It serves the Message API and
    the legacy API (``grid.run.run_id``). It is not an engine: no isolation, no network, no
    parallelism.
    """

    def __init__(self, n_nodes: int, app=None, run_config: dict | None = None):
        from flwr.app import Context, RecordDict

        self.app = app or make_client_app()
        self.run = InProcessRun()
        self.node_ids = [1000 + k for k in range(n_nodes)]
        self.contexts = {
            node: Context(run_id=self.run.run_id, node_id=node, state=RecordDict(),
                          node_config={"partition-id": k, "num-partitions": n_nodes},
                          run_config=dict(run_config or {}))
            for k, node in enumerate(self.node_ids)}

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list:
        from flwr.app import Error, Message

        replies = []
        for msg in messages:
            msg = wire_copy(msg)
            try:
                reply = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as exc:  # what the engines do: an error reply, the round goes on
                reply = Message(Error(code=2, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            replies.append(wire_copy(reply))
        return replies

    def __enter__(self) -> InProcessGrid:
        """Give this process the task identity Flower's ``Message`` reads (restored on exit)."""
        from flwr.supercore.task_identity import TaskIdentity

        self._saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = self.run.run_id, 1, 1
        return self

    def __exit__(self, *exc) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = self._saved


# ---------------------------------------------------------------------------------------------
# Ray, and the one way to run a ServerApp against ClientApps
# ---------------------------------------------------------------------------------------------

def ray_start_failed(exc: BaseException) -> bool:
    """True when an exception chain says Ray's node failed to start (nothing ran yet)."""
    while exc is not None:
        if "timed out during startup" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def stop_stray_ray(before: set[int]) -> list[int]:
    """Stop the Ray processes a failed start left behind (children of this process that were not
    there ``before``); returns their pids."""
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


def run_on_ray(server_app, client_app, n_nodes: int, cpus_per_client: float = 1.0,
               ray_cpus: int | None = None, verbose: bool = False, attempts: int = 2,
               started: Callable[[], bool] = lambda: False) -> None:
    """``flwr.simulation.run_simulation`` with ``n_nodes`` SuperNodes on Ray.

    ``cpus_per_client`` is Ray's ``client_resources`` (with 2 cores and 1 CPU each, two hospitals
    train at once). A start that fails before anything ran (``started()`` is false) is cleaned
    up and tried again, ``attempts`` times in all; then :class:`RayStartError`.
    """
    import psutil
    from flwr.simulation import run_simulation

    if cpus_per_client <= 0:
        raise FLConfigError(f"cpus_per_client must be > 0, got {cpus_per_client}")
    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
               "init_args": {"num_cpus": ray_cpus or os.cpu_count() or 1,
                             "logging_level": "ERROR", "log_to_driver": verbose,
                             "include_dashboard": False}}
    for attempt in range(1, attempts + 1):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_nodes,
                           backend_config=backend, verbose_logging=verbose)
            return
        except RuntimeError as exc:
            if started() or not ray_start_failed(exc):
                raise
            stray = stop_stray_ray(before)
            print(f"Ray did not start (attempt {attempt} of {attempts}; stopped {len(stray)} "
                  "processes it left)", flush=True)
    raise RayStartError(f"Ray's node did not start in {attempts} attempts (a loaded machine: "
                        "ray-project/ray#65983); use fallback=True or engine='in-process'")


def server_context():
    """The ``Context`` a ``ServerApp`` gets when it runs in this process."""
    from flwr.app import Context, RecordDict

    return Context(run_id=InProcessRun().run_id, node_id=0, node_config={}, state=RecordDict(),
                   run_config={})


def run_apps(server_app, client_app, n_nodes: int, engine: str = "ray", fallback: bool = False,
             verbose: bool = False, started: Callable[[], bool] = lambda: False,
             **ray_options) -> str:
    """Run ``server_app`` against ``n_nodes`` nodes of ``client_app``; returns the engine that ran
    them: ``"ray"`` (Flower's simulation engine, :func:`run_on_ray` with ``ray_options``) or
    ``"in-process"`` (an :class:`InProcessGrid`, asked for or, with ``fallback``, after Ray
    failed to start)."""
    if engine not in ENGINES:
        raise FLConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    with quiet_flower(verbose):
        if engine == "ray":
            try:
                run_on_ray(server_app, client_app, n_nodes, verbose=verbose, started=started,
                           **ray_options)
                return "ray"
            except RayStartError:
                if not fallback:
                    raise
                print("WARNING: running the same ServerApp and ClientApp on an in-process grid "
                      "instead of Flower's simulation engine", flush=True)
        with InProcessGrid(n_nodes, app=client_app) as grid:
            server_app(grid, server_context())
    return "in-process"


# ---------------------------------------------------------------------------------------------
# Message-API experiments
# ---------------------------------------------------------------------------------------------

def check_experiments(experiments: list[FLConfig]) -> int:
    """Refuse an experiment list one simulation cannot run; returns its number of hospitals."""
    if not experiments:
        raise FLConfigError("simulate() needs at least one FLConfig")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise FLConfigError(f"experiment names must be unique, got {names}")
    sizes = {e.n_hospitals for e in experiments}
    if len(sizes) != 1:
        raise FLConfigError(f"all experiments of one simulation need the same n_hospitals, got "
                            f"{sorted(sizes)}; run one simulate() call per number of hospitals")
    return sizes.pop()


def simulate(experiments: Iterable[FLConfig], cpus_per_client: float = 1.0,
             ray_cpus: int | None = None, on_client_updates: UpdateHook | None = None,
             keep_updates: bool = False, verbose: bool = False, progress: bool = True,
             ray_start_attempts: int = 2, fallback: bool = False,
             engine: str = "ray") -> dict[str, FLResult]:
    """Run experiments one after another in ONE simulation (one Ray start-up for all).

    Every experiment must use the same number of hospitals (the number of simulated SuperNodes).
    Returns ``{name: FLResult}``; each result's ``engine`` says what ran it. With
    ``on_client_updates`` every hospital's update is handed over as the server receives it
    (exactly what secure aggregation hides).
    """
    from flwr.serverapp import ServerApp

    experiments = list(experiments)
    n_hospitals = check_experiments(experiments)
    results: dict[str, FLResult] = {}
    bar = config.progress(total=sum(e.rounds for e in experiments), desc="federated rounds",
                          disable=not progress)
    app = ServerApp()

    @app.main()
    def main(grid, context):
        for cfg in experiments:
            results[cfg.name] = run_experiment(grid, cfg, on_client_updates, keep_updates, bar)

    try:
        used = run_apps(app, make_client_app(), n_hospitals, engine=engine, fallback=fallback,
                        verbose=verbose, started=lambda: bool(results),
                        cpus_per_client=cpus_per_client, ray_cpus=ray_cpus,
                        attempts=ray_start_attempts)
    finally:
        bar.close()
    return finished(results, [e.name for e in experiments], used)


def finished(results: dict, names: list[str], engine: str) -> dict:
    """``results`` once every experiment in ``names`` is in it, each marked with the ``engine``
    that ran it; an error naming the missing ones otherwise (a ServerApp that failed on the
    simulation engine is logged by Flower, not raised)."""
    missing = [n for n in names if n not in results]
    if missing:
        raise RuntimeError(f"the simulation ended before experiments {missing} finished; rerun "
                           "with verbose=True to see Flower's log")
    for result in results.values():
        result.engine = engine
    return results


def run_in_process(experiments: Iterable[FLConfig], **kwargs) -> dict[str, FLResult]:
    """:func:`simulate` on an :class:`InProcessGrid` (no progress bar unless asked for)."""
    kwargs.setdefault("progress", False)
    return simulate(experiments, engine="in-process", **kwargs)
