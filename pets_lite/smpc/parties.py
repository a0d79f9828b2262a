"""Real party processes for CrypTen: fork, rendezvous over gloo on 127.0.0.1, collect, clean up.

Parties are operating-system processes (forked, one OpenMP thread each) that talk over
``torch.distributed`` (gloo) on 127.0.0.1 through a port chosen at run time. Nothing is written
to disk; a failing party stops the others and its traceback is raised in the caller as
:class:`PartyError`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue as queue_lib
import time
import traceback
from typing import Any, Callable, Sequence

import torch

from .. import crypten_compat, net

#: Party ranks in the two-party scenarios: the model owner (or hospital A) and the hospital (B).
OWNER, HOSPITAL = 0, 1


class PartyError(RuntimeError):
    """A party process failed (its traceback is in the message) or did not finish in time."""


def fresh_generator_state() -> None:
    """Re-seed torch's global generator from the operating system's entropy (``os.urandom``).

    A forked process inherits its parent's generator state. CrypTen's trusted dealer draws the
    seed of every party's triple stream from torch's *global* generator
    (``TTPServer._setup_generators``), so a dealer forked from a notebook that called
    ``seed_everything(0)`` hands out seeds that every party can replay, and two runs hand out the
    same ones (the same Beaver triples twice). Each party process calls this first.
    Note that torch's CPU generator is MT19937 seeded from 32 bits of the seed (see
    :func:`pets_lite.smpc.shares.same_stream`): fresh, but not cryptographic.
    """
    torch.manual_seed(int.from_bytes(os.urandom(8), "little"))


def _party_main(fn, rank, world_size, port, provider, threads, args, kwargs, results) -> None:
    """Body of one party process: set up the communicator, run ``fn(rank, ...)``, report back."""
    status = 0
    try:
        fresh_generator_state()
        torch.set_num_threads(threads)  # forked parties can hang in OpenMP (CrypTen#33, fix #37)
        os.environ.update({"WORLD_SIZE": str(world_size), "RANK": str(rank),
                           "RENDEZVOUS": f"tcp://127.0.0.1:{port}",
                           "DISTRIBUTED_BACKEND": "gloo", "OMP_NUM_THREADS": str(threads)})
        crypten = crypten_compat.crypten_module()
        crypten.cfg.mpc.provider = provider
        crypten.cfg.communicator.verbose = True  # count rounds and bytes
        crypten.init()
        if rank == world_size:  # the trusted dealer: serves correlated randomness, sees no data
            crypten.mpc.provider.TTPServer()
            value = None
        else:
            value = fn(rank, *args, **kwargs)
        # Plain pickle, by value: the queue's own pickler would pass torch tensors as shared-memory
        # file descriptors, which die with this process before the caller can read them.
        results.put(("ok", rank, pickle.dumps(value)))
        crypten.uninit()
    except BaseException:  # noqa: BLE001 - everything goes back to the caller
        status = 1
        try:
            results.put(("error", rank, traceback.format_exc()))
        except Exception:  # noqa: BLE001
            pass
    finally:
        results.close()
        results.join_thread()
        os._exit(status)  # skip the parent's atexit handlers inherited through fork


def _stop(processes) -> None:
    """Terminate, then kill, every process still alive, and reap them all."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 5
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def run_parties(fn: Callable[..., Any], world_size: int = 2, args: tuple = (),
                kwargs: dict | None = None, provider: str = "TTP", timeout: float = 600,
                threads: int = 1) -> list[Any]:
    """Run ``fn(rank, *args, **kwargs)`` in ``world_size`` party processes; return their values.

    Each party is a forked OS process that initialises CrypTen over torch.distributed (gloo,
    ``tcp://127.0.0.1:<free port>``), so every share crosses a real socket. ``provider="TTP"`` adds
    one more process, a trusted dealer that hands out Beaver triples and never sees inputs;
    ``"TFP"`` lets party 0 generate them (faster, but then party 0 must be trusted not to look:
    CrypTen's authors call it a development mode, CrypTen#450). Every party re-seeds torch from
    the OS first (:func:`fresh_generator_state`). If a party raises, the others are stopped and
    :class:`PartyError` carries its traceback; after ``timeout`` seconds all are stopped.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"world_size must be an int >= 2 (MPC needs two parties), got "
                         f"{world_size!r}")
    if provider not in ("TTP", "TFP"):
        raise ValueError(f"provider must be 'TTP' (trusted dealer) or 'TFP', got {provider!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    kwargs = kwargs or {}
    crypten_compat.crypten_module()  # first use: import (and repair) once, children inherit it
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    port = net.free_port()
    n = world_size + (1 if provider == "TTP" else 0)
    processes = [ctx.Process(target=_party_main, name=f"smpc-party-{rank}", daemon=True,
                             args=(fn, rank, world_size, port, provider, threads, args, kwargs,
                                   results))
                 for rank in range(n)]
    values: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        for p in processes:
            p.start()
        while len(values) < n:
            try:
                kind, rank, value = results.get(timeout=0.2)
            except queue_lib.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    # give the dying party a moment to deliver its traceback
                    try:
                        kind, rank, value = results.get(timeout=1.0)
                    except queue_lib.Empty:
                        raise PartyError(
                            f"party process {dead[0].name} died with exit code {dead[0].exitcode} "
                            "without reporting an error (killed? out of memory?)") from None
                elif time.monotonic() > deadline:
                    raise PartyError(f"the parties did not finish within {timeout:.0f} s; all "
                                     "were stopped (raise `timeout` or shrink the job)")
                else:
                    continue
            if kind == "error":
                who = "the trusted dealer" if rank == world_size else f"party {rank}"
                raise PartyError(f"{who} failed; the other parties were stopped. Its traceback:\n"
                                 f"{value}")
            values[rank] = pickle.loads(value)
    finally:
        _stop(processes)
        results.close()
        results.join_thread()
    return [values[r] for r in range(world_size)]


def total_stats(stats: Sequence[dict]) -> dict[str, float]:
    """Rounds (the most any party logged) and bytes (CrypTen's per-party logs summed and halved:
    the bytes that crossed the link, both directions together).

    With the TTP provider, party 0's log also holds its requests to the dealer and the triple shares
    it receives, so these counts include that preprocessing traffic (party 1's is seeded, silent).
    """
    return {"rounds": int(max(s["rounds"] for s in stats)),
            "bytes": float(sum(s["bytes"] for s in stats) / 2),
            "comm_seconds": float(max(s["time"] for s in stats))}


def reset_stats() -> None:
    """Zero this party's communication counters."""
    crypten_compat.crypten_module().comm.get().reset_communication_stats()


def comm_stats() -> dict:
    """This party's communication counters since the last :func:`reset_stats`."""
    return dict(crypten_compat.crypten_module().comm.get().get_communication_stats())


def check_images(images) -> torch.Tensor:
    """``images`` as a float tensor (N, C, H, W), or a clear error."""
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
    if len(images) == 0:
        raise ValueError("images is empty: pass at least one image")
    return images.float()
