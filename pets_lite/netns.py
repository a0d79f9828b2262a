"""Hosts of their own on one machine: Linux network namespaces joined by a switch.

A :class:`Testbed` creates one network namespace per host (a SuperLink, each hospital, each
CrypTen party), plus a switch namespace holding a Linux bridge, and joins every host to the
switch by a veth pair on a small test subnet (``10.77.<n>.0/24``). Processes started with
:meth:`Testbed.popen` run inside their host's namespace: they reach each other only through the
test subnet's addresses, and nothing outside. Leaving the ``with`` block (also on an error) kills
every process still inside a namespace of the testbed and deletes the namespaces, which deletes
their veth ends too; :meth:`Testbed.leftovers` lists what would remain (nothing, asserted by the
tests).

Namespaces need root and ``ip netns`` (iproute2). :func:`available` says whether this machine can
make them; callers fall back to loopback when it cannot, and say so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field

#: The bridge's subnets: testbed i uses 10.77.i.0/24 (hosts from .1).
SUBNET_PREFIX = "10.77"


class NamespaceError(RuntimeError):
    """A namespace, link or address could not be made; the message names the command."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NamespaceError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here (``None`` when they can)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces are a Linux feature"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"pets-probe-{uuid.uuid4().hex[:6]}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def available() -> bool:
    """True when this process can create network namespaces."""
    return unavailable_reason() is None


def netem_available() -> bool:
    """True when the kernel has the ``netem`` qdisc (``tc qdisc ... netem``); many do not."""
    if not available() or shutil.which("tc") is None:
        return False
    with Testbed(["probe"]) as bed:
        done = subprocess.run(["ip", "netns", "exec", bed.namespace("probe"), "tc", "qdisc", "add",
                               "dev", "lo", "root", "netem", "delay", "1ms"],
                              capture_output=True, text=True)
    return done.returncode == 0


@dataclass
class Host:
    """One host of a testbed: its namespace, its interface and its address on the test subnet."""

    name: str
    namespace: str
    address: str
    interface: str


@dataclass
class Testbed:
    """Network namespaces for ``hosts`` (names), joined by a bridge; a context manager.

    >>> with Testbed(["superlink", "h1"]) as bed:           # doctest: +SKIP
    ...     bed.address("superlink")
    '10.77.x.1'
    """

    hosts: list[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    subnet: int | None = None
    _hosts: dict[str, Host] = field(default_factory=dict, init=False)
    _procs: list[subprocess.Popen] = field(default_factory=list, init=False)
    _made: list[str] = field(default_factory=list, init=False)

    def __post_init__(self):
        if len(set(self.hosts)) != len(self.hosts) or not self.hosts:
            raise NamespaceError(f"host names must be unique and non-empty, got {self.hosts}")
        if len(self.hosts) > 250:
            raise NamespaceError("a testbed holds at most 250 hosts")
        if self.subnet is None:
            self.subnet = 1 + int(self.tag, 16) % 250

    def namespace(self, host: str) -> str:
        return self._host(host).namespace

    def address(self, host: str) -> str:
        """The host's address on the test subnet."""
        return self._host(host).address

    def _host(self, host: str) -> Host:
        try:
            return self._hosts[host]
        except KeyError:
            raise NamespaceError(f"no host {host!r} in this testbed: {self.hosts}") from None

    def __enter__(self) -> Testbed:
        reason = unavailable_reason()
        if reason:
            raise NamespaceError(reason)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        switch = f"pets-{self.tag}-sw"
        _ip("netns", "add", switch)
        self._made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for k, name in enumerate(self.hosts, start=1):
            ns = f"pets-{self.tag}-{k}"
            _ip("netns", "add", ns)
            self._made.append(ns)
            inner, outer = f"v{self.tag}{k}", f"b{self.tag}{k}"
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "netns", switch)
            _ip("-n", switch, "link", "set", outer, "master", "br0", "up")
            address = f"{SUBNET_PREFIX}.{self.subnet}.{k}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self._hosts[name] = Host(name, ns, address, inner)

    def popen(self, host: str, args: list[str], **kwargs) -> subprocess.Popen:
        """Start ``args`` inside ``host``'s namespace (``ip netns exec`` execs it: the pid is the
        program's). Keyword arguments go to :class:`subprocess.Popen`."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace(host), *args], **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, host: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run ``args`` inside ``host``'s namespace to completion."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.namespace(host), *args], **kwargs)

    def pids(self) -> list[int]:
        """Every process still inside one of this testbed's namespaces."""
        found = []
        for ns in self._made:
            done = _ip("netns", "pids", ns, check=False)
            found += [int(p) for p in done.stdout.split() if p.strip().isdigit()]
        return found

    def close(self, timeout: float = 10.0) -> None:
        """Kill what runs inside, delete every namespace (their veth ends go with them)."""
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        while self._made:
            _ip("netns", "del", self._made.pop(), check=False)

    def leftovers(self) -> list[str]:
        """Namespaces of this testbed that still exist (empty after :meth:`close`)."""
        listed = _ip("netns", "list", check=False).stdout
        return [line.split()[0] for line in listed.splitlines()
                if line.startswith(f"pets-{self.tag}-")]
