"""Ports and listeners shared by the deployment engine and CrypTen's parties."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from pets_lite import net


def test_free_port_is_bindable_and_wait_for_port_sees_a_listener():
    port = net.free_port()
    with socket.socket() as server:
        server.bind((net.LOOPBACK, port))
        server.listen()
        net.wait_for_port(port, timeout=5)


def test_wait_for_port_fails_with_a_message():
    port = net.free_port()
    with pytest.raises(net.NetError, match="nothing listened"):
        net.wait_for_port(port, timeout=0.5)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(net.NetError, match="exited with code 3"):
        net.wait_for_port(port, timeout=5, process=proc)
