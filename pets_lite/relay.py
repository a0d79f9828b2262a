"""A TCP relay that delays every byte by a fixed time: added latency without ``tc netem``.

Many kernels (this project's CI machine among them) have no ``netem`` qdisc. Put this relay
between a client and a server instead: it accepts on ``listen``, connects to ``target`` for every
connection, and forwards each direction with a one-way delay of ``delay_ms`` (so a round trip
through it takes ``2 * delay_ms`` longer), keeping the bytes' order. TLS passes through untouched
(the relay never sees plaintext).

    python -m pets_lite.relay --listen 10.77.3.1:9101 --target 10.77.3.1:9092 --delay-ms 25
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"an address is host:port, got {address!r}")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk released ``delay`` seconds after it arrived."""
    queue: asyncio.Queue = asyncio.Queue()

    async def release():
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if chunk is None:
                break
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(release())
    try:
        while chunk := await reader.read(1 << 16):
            queue.put_nowait((time.monotonic() + delay, chunk))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((time.monotonic() + delay, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def serve(listen: str, target: str, delay_ms: float, ready=None) -> None:
    """Relay every connection to ``listen`` on to ``target`` with ``delay_ms`` each way."""
    if delay_ms < 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
    delay = delay_ms / 1000.0
    target_host, target_port = _split(target)

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w, delay), _pipe(server_r, client_w, delay))

    host, port = _split(listen)
    server = await asyncio.start_server(handle, host, port)
    if ready is not None:
        ready()
    async with server:
        await server.serve_forever()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port to accept on")
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay (ms)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.listen, args.target, args.delay_ms,
                          ready=lambda: print(f"relaying {args.listen} -> {args.target} with "
                                              f"{args.delay_ms:g} ms each way", flush=True)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
