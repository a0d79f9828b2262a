"""Network plumbing the multi-process chapters share: free ports and waiting for a listener.

Flower's deployment engine (:mod:`pets_lite.fl.deploy`) and CrypTen's parties
(:mod:`pets_lite.smpc`) both start processes that meet on TCP ports chosen at run time.
"""

from __future__ import annotations

import socket
import time

#: The loopback address every local run binds to.
LOOPBACK = "127.0.0.1"


class NetError(RuntimeError):
    """A listener did not come up, or an address cannot be used."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 60.0, process=None) -> None:
    """Block until something accepts connections on ``host:port``; fail if ``process`` (a
    ``subprocess.Popen``) exits first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise NetError(f"process {process.args[0]} exited with code {process.returncode} "
                           f"before listening on {host}:{port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise NetError(f"nothing listened on {host}:{port} within {timeout:.0f} s")
