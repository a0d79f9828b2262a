"""Hosts in network namespaces, and the delaying relay that stands in for netem."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from pets_lite import net, netns, relay

REASON = netns.unavailable_reason()
needs_netns = pytest.mark.skipif(REASON is not None, reason=f"no network namespaces: {REASON}")

ECHO = ("import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    c,_=s.accept(); c.sendall(c.recv(64)); c.close()\n")


def exchange(host: str, port: int, timeout: float = 3.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"ping")
        return s.recv(64)


@needs_netns
def test_hosts_reach_each_other_only_on_the_test_subnet_and_nothing_is_left():
    with netns.Testbed(["server", "client"]) as bed:
        address = bed.address("server")
        proc = bed.popen("server", [sys.executable, "-c", ECHO, address, "9500"],
                         stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        probe = f"import socket; s=socket.create_connection(('{address}', 9500), 3); " \
                "s.sendall(b'ping'); print(s.recv(64).decode())"
        assert bed.run("client", [sys.executable, "-c", probe]).stdout.strip() == "ping"
        with pytest.raises(OSError):  # the root namespace has no route to the test subnet
            exchange(address, 9500, timeout=1)
        assert bed.pids(), "the server runs inside the server's namespace"
    assert bed.leftovers() == [] and bed.pids() == []
    assert proc.poll() is not None, "the process inside was stopped"


@needs_netns
def test_namespaces_are_removed_when_the_block_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with netns.Testbed(["a"]) as bed:
            bed.popen("a", [sys.executable, "-c", "import time; time.sleep(60)"])
            raise RuntimeError("boom")
    assert bed.leftovers() == [] and bed.pids() == []


def test_testbeds_refuse_duplicate_hosts():
    with pytest.raises(netns.NamespaceError, match="unique"):
        netns.Testbed(["a", "a"])


def test_without_root_the_reason_is_given(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert netns.unavailable_reason() == "creating network namespaces needs root"
    with pytest.raises(netns.NamespaceError, match="needs root"):
        netns.Testbed(["a"]).__enter__()


def round_trip_seconds(port: int, n: int = 3) -> float:
    start = time.perf_counter()
    for _ in range(n):
        assert exchange(net.LOOPBACK, port) == b"ping"
    return (time.perf_counter() - start) / n


def test_the_relay_adds_twice_its_one_way_delay_per_round_trip():
    echo_port = net.free_port()
    server = subprocess.Popen([sys.executable, "-c", ECHO, net.LOOPBACK, str(echo_port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        timings = {}
        for delay in (0.0, 40.0):
            port = net.free_port()
            ready = threading.Event()
            thread = threading.Thread(target=lambda: __import__("asyncio").run(relay.serve(
                f"{net.LOOPBACK}:{port}", f"{net.LOOPBACK}:{echo_port}", delay, ready.set)),
                daemon=True)
            thread.start()
            assert ready.wait(5)
            timings[delay] = round_trip_seconds(port)
        added = timings[40.0] - timings[0.0]
        # one connect (no delay: accepted locally), one request and one reply through the relay
        assert 0.07 < added < 0.30, timings
        assert timings[0.0] < 0.05, timings
    finally:
        server.kill()
        server.wait()


def test_the_relay_refuses_a_negative_delay_and_a_bad_address():
    import asyncio

    with pytest.raises(ValueError, match="delay_ms"):
        asyncio.run(relay.serve("127.0.0.1:1", "127.0.0.1:2", -1))
    with pytest.raises(ValueError, match="host:port"):
        asyncio.run(relay.serve("127.0.0.1", "127.0.0.1:2", 1))
