"""Run the hospital Flower App on Flower's deployment engine, on this machine's loopback.

:class:`LocalDeployment` starts one ``flower-superlink`` and N ``flower-supernode`` processes on
127.0.0.1 (``--insecure``: plain HTTP, loopback only; in Flower 1.42 the SuperLink serves its
Fleet, Control and runtime APIs on one port), submits the app with ``flwr run`` and stops every
process it started, also when something fails. Ports are chosen free at run time. Each SuperNode
is one hospital: its ``--node-config`` names its partition.

Two traps this module steps around:

* ``flwr run . local`` starts a *detached* SuperLink of its own that keeps running afterwards; we
  start the SuperLink ourselves and point ``flwr`` at it through a private ``FLWR_HOME``;
* a SuperLink ``uv sync``-s the app's dependencies by default (a torch dependency would pull a
  multi-GB CUDA build); we start it with ``--disable-runtime-dependency-installation``, so the
  apps run in this environment, where ``pets_lite`` is installed.

From a shell: ``python -m pets_lite.fl.deploy --supernodes 2 --run-config rounds=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import config, net
from .server import FLResult
from .settings import FLConfig

#: The Flower App folder (pyproject with ``[tool.flwr.app]``) shipped with the package.
APP_DIR = Path(__file__).resolve().parent / "app"
HOST = "127.0.0.1"
CONNECTION = "pets-local"


class DeploymentError(net.NetError):
    """The deployment engine did not start, or the run did not finish; the message says where."""


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


@dataclass
class DeploymentRun:
    """What one ``flwr run`` on the deployment engine gave back."""

    run_id: int
    status: str
    seconds: float
    result: FLResult | None
    log: str = ""
    pids: list[int] = field(default_factory=list)


class LocalDeployment:
    """A SuperLink and ``n_supernodes`` SuperNodes on 127.0.0.1, as a context manager.

    >>> with LocalDeployment(n_supernodes=2) as fed:           # doctest: +SKIP
    ...     run = fed.run(run_config={"rounds": 1})
    ...     run.result.test_auc
    """

    def __init__(self, n_supernodes: int = 2, workdir: str | os.PathLike | None = None,
                 startup_timeout: float = 90.0, keep_workdir: bool = False):
        if isinstance(n_supernodes, bool) or not isinstance(n_supernodes, int) or n_supernodes < 1:
            raise DeploymentError(f"n_supernodes must be a positive int, got {n_supernodes!r}")
        self.n_supernodes = n_supernodes
        self.startup_timeout = startup_timeout
        self.keep_workdir = keep_workdir or workdir is not None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pets-fl-"))
        self.bin_dir = Path(sys.executable).parent
        self.port: int | None = None
        self.ports: list[int] = []  # the SuperLink's and every SuperNode's
        self.processes: list[subprocess.Popen] = []
        self.seen: dict[int, float] = {}  # pid -> create time, for every process of ours seen
        self._logs: list = []

    # -- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            found = shutil.which(name)
            if not found:
                raise DeploymentError(f"{name} not found next to {sys.executable} nor on PATH; "
                                      "install flwr[simulation]==1.42.0 in this environment")
            return found
        return str(path)

    def env(self) -> dict[str, str]:
        """The environment of every process: private FLWR_HOME, this venv first on PATH."""
        env = os.environ.copy()
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        env["OMP_NUM_THREADS"] = config.fl_threads()
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PETS_DATA_DIR", str(config.data_dir()))
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        self._logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                cwd=self.workdir, start_new_session=True)
        self.processes.append(proc)
        self._remember()
        return proc

    def start(self) -> None:
        """Start the SuperLink, wait for it, start the SuperNodes, write the ``flwr`` config."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "flwr-home"
        home.mkdir(exist_ok=True)
        self.port = net.free_port(HOST)
        self.ports.append(self.port)
        address = f"{HOST}:{self.port}"
        link = self._spawn("superlink", [
            self._tool("flower-superlink"), "--insecure", "--host", HOST, "--port", str(self.port),
            "--disable-runtime-dependency-installation"])
        net.wait_for_port(self.port, HOST, timeout=self.startup_timeout, process=link)
        for k in range(self.n_supernodes):
            self.ports.append(net.free_port(HOST))
            self._spawn(f"supernode-{k}", [
                self._tool("flower-supernode"), "--insecure", "--superlink", address,
                "--host", HOST, "--port", str(self.ports[-1]), "--max-retries", "30",
                "--node-config", f"partition-id={k} num-partitions={self.n_supernodes}"])
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{address}"\ninsecure = true\n')

    def _remember(self) -> list:
        """Every live process of ours: the started ones, their descendants, and any process
        whose command line names our port (Flower's SuperExec runs detached)."""
        import psutil

        found = {}
        for proc in self.processes:
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    found[p.pid] = p
            except psutil.NoSuchProcess:
                pass
        if self.ports:
            needles = tuple(f"{HOST}:{port}" for port in self.ports)
            for p in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if any(n in part for part in (p.info["cmdline"] or []) for n in needles):
                        found[p.pid] = p
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        found.pop(os.getpid(), None)
        for pid, p in list(found.items()):
            try:
                self.seen.setdefault(pid, p.create_time())
            except psutil.NoSuchProcess:
                found.pop(pid)
        return list(found.values())

    def alive(self) -> list[int]:
        """Pids of processes this deployment started (or saw spawned) that still run."""
        import psutil

        out = []
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate every process of ours (SIGTERM, then SIGKILL), close logs, clean up."""
        import psutil

        for _ in range(3):
            procs = self._remember()
            procs += [psutil.Process(pid) for pid in self.alive()
                      if pid not in {p.pid for p in procs}]
            if not procs:
                break
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.terminate()
            _, still = psutil.wait_procs(procs, timeout=timeout)
            for p in still:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            psutil.wait_procs(still, timeout=timeout)
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        for log in self._logs:
            log.close()
        self._logs.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- runs --------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this deployment's SuperLink."""
        return subprocess.run([self._tool("flwr"), *args], env=self.env(), cwd=self.workdir,
                              capture_output=True, text=True, timeout=timeout)

    def status(self, run_id: int) -> str:
        """The run's status string as ``flwr ls`` reports it (e.g. ``finished:completed``)."""
        out = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            runs = json.loads(out.stdout)["runs"]
            return str(runs[0]["status"])
        except (ValueError, KeyError, IndexError):
            return f"unknown ({out.stdout.strip()[-200:]} {out.stderr.strip()[-200:]})"

    def run(self, app_dir: str | os.PathLike = APP_DIR, run_config: dict | None = None,
            timeout: float = 300.0) -> DeploymentRun:
        """Submit the app with ``flwr run`` and wait until it finishes; read its results file."""
        run_config = dict(run_config or {})
        known = FLConfig.field_names()
        unknown = [k for k in run_config if k.replace("_", "-") not in known]
        if unknown:
            raise DeploymentError(f"unknown run-config keys {unknown}; known: {sorted(known)}")
        FLConfig.from_record({"n-hospitals": self.n_supernodes, **run_config})  # refuse bad values
        if not self.processes:
            raise DeploymentError("start() the deployment first (or use it as a context manager)")
        run_config.setdefault("n-hospitals", self.n_supernodes)
        results = self.workdir / f"result-{uuid.uuid4().hex[:8]}.json"
        run_config["results-path"] = str(results)
        args = ["run", str(Path(app_dir).resolve()), CONNECTION, "--format", "json"]
        for key, value in run_config.items():
            args += ["--run-config", f"{key.replace('_', '-')}={_toml_value(value)}"]
        start = time.perf_counter()
        submitted = self.flwr(*args)
        try:
            run_id = int(json.loads(submitted.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            raise DeploymentError(f"flwr run did not start a run:\n{submitted.stdout[-2000:]}\n"
                                  f"{submitted.stderr[-2000:]}") from None
        try:  # `flwr log --stream` returns once the run has finished and all its logs are out
            log = self.flwr("log", str(run_id), CONNECTION, "--stream", timeout=timeout).stdout
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s; "
                                  f"status {self.status(run_id)}") from None
        status = self.status(run_id)
        for _ in range(20):
            if status.startswith("finished"):
                break
            time.sleep(0.5)
            status = self.status(run_id)
        seconds = time.perf_counter() - start
        self._remember()
        result = FLResult.from_json(json.loads(results.read_text())) if results.exists() else None
        return DeploymentRun(run_id, status, seconds, result, log, sorted(self.seen))


def main(argv: list[str] | None = None) -> int:
    """Command line: start the engine, run the app once, print the result, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernodes", type=int, default=2, help="hospitals (SuperNodes)")
    parser.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="FLConfig overrides, e.g. rounds=3 alpha=0.1 strategy=fedprox")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.run_config:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)  # numbers, true/false, "quoted strings"
        except ValueError:
            overrides[key] = value
    with LocalDeployment(args.supernodes) as fed:
        run = fed.run(run_config=overrides, timeout=args.timeout)
        print(f"run {run.run_id}: {run.status} in {run.seconds:.1f} s")
        if run.result:
            for row in run.result.rounds:
                print(f"  round {row['round']}: test AUC {row['test_auc']:.3f}, "
                      f"{row['bytes_down'] + row['bytes_up']:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
