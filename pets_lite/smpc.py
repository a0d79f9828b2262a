"""Secure multi-party computation with CrypTen: a torch-2.13 shim, real party processes, scenarios.

CrypTen 0.4.1 (2022, its last release) predates several PyTorch changes. :func:`apply_shim` repairs
the four breakages we hit, each commented with its upstream cause, and runs when this module is
imported (before ``crypten`` is). Import ``crypten`` through :func:`crypten_module`, never
``crypten.models`` (it imports torchvision).

Parties are real operating-system processes (forked, one OpenMP thread each) that talk over
``torch.distributed`` (gloo) on 127.0.0.1 through a port chosen at run time: see
:func:`run_parties`. Nothing is written to disk; a failing party stops the others and its traceback
is raised in the caller as :class:`PartyError`.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing as mp
import os
import pickle
import queue as queue_lib
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import net
from .recipes import Recipe, cached_model

#: The four repairs :func:`apply_shim` knows, by name.
FIXES = ("onnx_registration", "onnx_dynamo", "onnx_dedup", "load_weights_only")

_APPLIED: set[str] = set()

#: For each repair: the failure without it, and its upstream cause (details in the fix functions).
BREAKAGES = {
    "onnx_registration": ("import crypten: No module named 'torch.onnx._internal.registration'",
                          "torch 2.9 moved it to torch.onnx._internal.torchscript_exporter"),
    "onnx_dynamo": ("crypten.nn.from_pytorch: No module named 'onnxscript'",
                    "torch.onnx.export defaults to dynamo=True since torch 2.9"),
    "onnx_dedup": ("from_pytorch with BatchNorm: CrypTen does not support ONNX op Identity",
                   "the exporter de-duplicates equal initializers through Identity nodes"),
    "load_weights_only": ("crypten.load: Weights only load failed",
                          "torch.load defaults to weights_only=True since torch 2.6"),
}


# ------------------------------------------------------------------------------------------------
# The shim
# ------------------------------------------------------------------------------------------------

def _fix_onnx_registration() -> None:
    """Breakage 1: ``import crypten`` fails with ``No module named 'torch.onnx._internal.registration'``.

    Upstream cause: CrypTen's ``crypten/nn/onnx_converter.py`` imports the symbolic-function registry
    from ``torch.onnx._internal.registration``; PyTorch 2.9 moved the TorchScript exporter's internals
    to ``torch.onnx._internal.torchscript_exporter`` (the dynamo exporter became the default). We
    alias the old module name to the new module before CrypTen is imported.
    """
    old = "torch.onnx._internal.registration"
    try:
        importlib.import_module(old)
        return  # an older torch: nothing to do
    except ModuleNotFoundError:
        pass
    sys.modules[old] = importlib.import_module(
        "torch.onnx._internal.torchscript_exporter.registration")


def _crypten_export(f, pytorch_model, dummy_input, *, dynamo_off: bool, keep_duplicates: bool):
    """CrypTen's ``_export_pytorch_model`` with the torch >= 2.9 repairs (see the two fixes)."""
    kwargs = {
        "do_constant_folding": False,
        "export_params": True,
        "input_names": ["input"],
        "operator_export_type": torch.onnx.OperatorExportTypes.ONNX,
        "output_names": ["output"],
        "opset_version": 17,
    }
    if dynamo_off:
        kwargs["dynamo"] = False
    if not keep_duplicates:
        torch.onnx.export(pytorch_model, dummy_input, f, **kwargs)
        return f
    original = torch._C._jit_pass_onnx_deduplicate_initializers
    torch._C._jit_pass_onnx_deduplicate_initializers = lambda graph, params, training: params
    try:
        torch.onnx.export(pytorch_model, dummy_input, f, **kwargs)
    finally:
        torch._C._jit_pass_onnx_deduplicate_initializers = original
    return f


def _install_export(crypten) -> None:
    """Install CrypTen's exporter with whichever of the two export repairs are applied."""
    conv = crypten.nn.onnx_converter
    conv._export_pytorch_model = functools.partial(
        _crypten_export,
        dynamo_off="onnx_dynamo" in _APPLIED,
        keep_duplicates="onnx_dedup" in _APPLIED,
    )


def _fix_load(crypten) -> None:
    """Breakage 4: ``crypten.load`` fails: ``Weights only load failed``.

    Upstream cause: PyTorch 2.6 changed ``torch.load``'s default to ``weights_only=True``, which
    refuses to unpickle CrypTen's ``MPCTensor`` / ``ArithmeticSharedTensor`` objects; CrypTen binds
    ``torch.load`` as the default ``load_closure`` of ``crypten.load`` and ``crypten.load_from_party``.
    We make that default ``torch.load(..., weights_only=False)``: full unpickling, which runs code
    from the file, so load only shares you saved yourself.
    """
    closure = functools.partial(torch.load, weights_only=False)
    crypten.load.__defaults__ = (closure,)
    defaults = list(crypten.load_from_party.__defaults__)
    defaults[-1] = closure
    crypten.load_from_party.__defaults__ = tuple(defaults)


def apply_shim(fixes: Sequence[str] = FIXES):
    """Apply the named repairs (all by default), import CrypTen, and return the ``crypten`` module.

    Breakage 2 (``onnx_dynamo``): ``crypten.nn.from_pytorch`` fails with ``No module named
    'onnxscript'``. Upstream cause: ``torch.onnx.export`` defaults to ``dynamo=True`` since PyTorch
    2.9 (the new exporter needs ``onnxscript``, and emits a graph CrypTen cannot read); CrypTen needs
    the TorchScript exporter, so we pass ``dynamo=False``.

    Breakage 3 (``onnx_dedup``): models with BatchNorm fail with ``CrypTen does not support ONNX op
    Identity``. Upstream cause: the TorchScript exporter now de-duplicates initializers with equal
    values (a fresh BatchNorm's ``weight`` and ``running_var`` are both ones) and feeds the copies
    through ``Identity`` nodes, an op CrypTen's converter has no module for. During CrypTen's export
    only, we skip that pass (``_jit_pass_onnx_deduplicate_initializers``), as older exporters did.
    """
    unknown = [f for f in fixes if f not in FIXES]
    if unknown:
        raise ValueError(f"unknown shim fix(es) {unknown}; choose from {FIXES}")
    if "onnx_registration" in fixes:
        _fix_onnx_registration()
        _APPLIED.add("onnx_registration")
    crypten = importlib.import_module("crypten")
    _APPLIED.update(f for f in fixes if f in ("onnx_dynamo", "onnx_dedup"))
    _install_export(crypten)
    if "load_weights_only" in fixes and "load_weights_only" not in _APPLIED:
        _fix_load(crypten)
        _APPLIED.add("load_weights_only")
    return crypten


def crypten_module():
    """The ``crypten`` module, shimmed for this PyTorch (idempotent)."""
    return apply_shim(FIXES)


from . import config  # noqa: E402

if config.crypten_shim_enabled():  # the tests switch it off to show each breakage
    crypten_module()


# ------------------------------------------------------------------------------------------------
# Party processes
# ------------------------------------------------------------------------------------------------

class PartyError(RuntimeError):
    """A party process failed (its traceback is in the message) or did not finish in time."""


def _party_main(fn, rank, world_size, port, provider, threads, args, kwargs, results) -> None:
    """Body of one party process: set up the communicator, run ``fn(rank, ...)``, report back."""
    status = 0
    try:
        torch.set_num_threads(threads)  # forked parties can hang in OpenMP (CrypTen issue #33)
        os.environ.update({"WORLD_SIZE": str(world_size), "RANK": str(rank),
                           "RENDEZVOUS": f"tcp://127.0.0.1:{port}",
                           "DISTRIBUTED_BACKEND": "gloo", "OMP_NUM_THREADS": str(threads)})
        crypten = crypten_module()
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
    ``"TFP"`` lets party 0 generate them (faster, but then party 0 must be trusted not to look).
    If a party raises, the others are stopped and :class:`PartyError` carries its traceback; if the
    parties take longer than ``timeout`` seconds, all are stopped and :class:`PartyError` says so.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"world_size must be an int >= 2 (MPC needs two parties), got {world_size!r}")
    if provider not in ("TTP", "TFP"):
        raise ValueError(f"provider must be 'TTP' (trusted dealer) or 'TFP', got {provider!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    kwargs = kwargs or {}
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


def _total(stats: Sequence[dict]) -> dict[str, float]:
    """Rounds (the most any party logged) and bytes (CrypTen's per-party logs summed and halved).

    With the TTP provider, party 0's log also holds its requests to the dealer and the triple shares
    it receives, so these counts include that preprocessing traffic (party 1's is seeded, silent).
    """
    return {"rounds": int(max(s["rounds"] for s in stats)),
            "bytes": float(sum(s["bytes"] for s in stats) / 2),
            "comm_seconds": float(max(s["time"] for s in stats))}


def _reset_stats() -> None:
    crypten_module().comm.get().reset_communication_stats()


def _stats() -> dict:
    return dict(crypten_module().comm.get().get_communication_stats())


# ------------------------------------------------------------------------------------------------
# Scenario 1: private inference (model owner = party 0, hospital = party 1)
# ------------------------------------------------------------------------------------------------

OWNER, HOSPITAL = 0, 1


@dataclass(frozen=True)
class MPCRecipe(Recipe):
    """The model owner's CNN for private inference and its plaintext training.

    The MPC-friendly member of the SmallCNN family: narrow; BatchNorm, which the owner folds into
    the convolutions before sharing (GroupNorm would need a division and a square root per sample
    under MPC); average pooling (linear; max pooling needs comparisons); ReLU."""

    width: int = 4
    depth: int = 2
    norm: str = "batch"
    pool: str = "avg"
    activation: str = "relu"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3

    FAST = {"epochs": 6}

    def problems(self) -> list[str]:
        return super().problems() + self.positive("width", "depth", "epochs", "batch_size", "lr")

    def architecture(self) -> dict:
        """The SmallCNN keyword arguments of this recipe."""
        return {"width": self.width, "depth": self.depth, "norm": self.norm, "pool": self.pool,
                "activation": self.activation}


#: The recipe of chapter 06's private-inference model (full mode).
MPC_RECIPE = MPCRecipe()


def inference_model(flag: str | None = None, seed: int | None = None, fast: bool | None = None,
                    progress: bool = True, recipe: MPCRecipe = MPC_RECIPE, **changes):
    """The model owner's CNN (:data:`MPC_RECIPE`), trained in plaintext once and cached.

    Returns ``(model, splits, results)`` with ``results["history"]`` from :func:`pets_lite.train.fit`.
    """
    from . import data, models, train

    given = {k: v for k, v in (("flag", flag), ("seed", seed)) if v is not None}
    recipe = recipe.variant(fast).replace(**given, **changes)
    meta = data.info(recipe.flag)
    splits = data.load_splits(recipe.flag, fast=recipe.fast, seed=recipe.seed)

    def build():
        return models.SmallCNN(in_channels=meta.n_channels, n_classes=meta.n_classes,
                               **recipe.architecture())

    def train_fn(model):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny net: one thread is several times faster on a busy machine
        try:
            history = train.fit(model, splits["train"], splits["val"], epochs=recipe.epochs,
                                lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed,
                                progress=progress, desc="model owner trains (plaintext)")
        finally:
            torch.set_num_threads(threads)
        return {"history": vars(history)}

    model, results, _ = cached_model("smpc_cnn", recipe, build, train_fn)
    model.eval()
    return model, splits, results


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every Conv2d -> BatchNorm2d pair fused into one Conv2d.

    At inference BatchNorm is an affine map per channel, so it folds into the convolution's weights
    and bias: the model computes the same function with no normalisation layer left to run in MPC.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module)
            for i in range(len(children) - 1):
                conv, bn = children[i], children[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return model


def _inference_party(rank: int, model: nn.Module, images: torch.Tensor, batch_size: int):
    """One party of :func:`private_inference`: each touches only its own input."""

    crypten = crypten_module()
    local = fold_batchnorm(model)
    if rank != OWNER:  # the hospital knows the architecture only: it holds no weights
        for p in local.parameters():
            p.data.zero_()
    dummy = torch.zeros(1, *images.shape[1:])
    _reset_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    secret_model = crypten.nn.from_pytorch(local, dummy).encrypt(src=OWNER)
    secret_model.eval()
    own = images if rank == HOSPITAL else torch.zeros_like(images)  # the shape is public
    outputs = []
    for i in range(0, len(images), batch_size):
        x = crypten.cryptensor(own[i:i + batch_size], src=HOSPITAL)
        outputs.append(secret_model(x).get_plain_text(dst=HOSPITAL))  # only the hospital decrypts
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    logits = torch.cat(outputs).numpy() if rank == HOSPITAL else None
    return {"logits": logits, "seconds": seconds, "cpu_seconds": cpu, "stats": _stats()}


def private_inference(model: nn.Module, images: torch.Tensor, batch_size: int = 64,
                      provider: str = "TTP", timeout: float = 600) -> dict[str, Any]:
    """Classify ``images`` with ``model`` under 2-party MPC; only the hospital learns the logits.

    Party 0 (model owner) secret-shares the weights, party 1 (hospital) the images; CrypTen
    evaluates the network on shares and opens the output to party 1 alone. Returns ``{"logits"
    (N, C) as the hospital decrypted them, "seconds" (slowest party, wall clock), "cpu_seconds"
    (the busiest party's CPU time: what it needs of a core of its own), "rounds", "bytes",
    "comm_seconds", "owner_saw_output" (False: party 0 got None)}``.
    """
    images = _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    values = run_parties(_inference_party, args=(model, images, batch_size), provider=provider,
                         timeout=timeout)
    return {"logits": values[HOSPITAL]["logits"], "seconds": max(v["seconds"] for v in values),
            "cpu_seconds": max(v["cpu_seconds"] for v in values),
            **_total([v["stats"] for v in values]),
            "owner_saw_output": values[OWNER]["logits"] is not None}


def _check_images(images) -> torch.Tensor:
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
    if len(images) == 0:
        raise ValueError("images is empty: pass at least one image")
    return images.float()


@torch.no_grad()
def plaintext_inference(model: nn.Module, images: torch.Tensor,
                        batch_size: int = 64) -> tuple[np.ndarray, float]:
    """``(logits, seconds)`` of the same model in the clear, batch by batch, on one thread."""
    images = _check_images(images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, like each party
    try:
        model.eval()
        start = time.perf_counter()
        logits = torch.cat([model(images[i:i + batch_size])
                            for i in range(0, len(images), batch_size)])
        return logits.numpy(), time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# What a share looks like
# ------------------------------------------------------------------------------------------------

def _share_party(rank: int, images: torch.Tensor):
    crypten = crypten_module()
    own = images if rank == HOSPITAL else torch.zeros_like(images)
    secret = crypten.cryptensor(own, src=HOSPITAL)
    return {"share": secret.share.clone().numpy(),
            "scale": int(secret.encoder.scale)}


def share_images(images: torch.Tensor, provider: str = "TFP") -> dict[str, np.ndarray]:
    """The hospital secret-shares ``images``; returns each party's share (int64, ring Z_2^64).

    ``{"share0", "share1", "encoded" (the fixed-point secret, share0 + share1 mod 2^64), "scale"}``.
    """
    images = _check_images(images)
    values = run_parties(_share_party, args=(images,), provider=provider)
    s0, s1 = values[0]["share"], values[1]["share"]
    with np.errstate(over="ignore"):
        encoded = (s0 + s1).astype(np.int64)  # wraps modulo 2^64, as the ring does
    return {"share0": s0, "share1": s1, "encoded": encoded, "scale": values[0]["scale"]}


def share_statistics(share: np.ndarray, secret: np.ndarray, other_share: np.ndarray | None = None,
                     bins: int = 256) -> dict[str, float]:
    """Tests that a share looks uniform and independent of the secret.

    ``chi2_p``: chi-square test of the top 8 bits against uniform; ``ks_p``: Kolmogorov-Smirnov of
    share / 2^64 against U(0, 1); ``corr``: Pearson correlation of the share with the secret;
    ``two_sample_p``: KS test between the shares of two different secrets (``other_share``).
    """
    from scipy import stats

    share = np.asarray(share, dtype=np.int64).ravel()
    secret = np.asarray(secret, dtype=np.float64).ravel()
    if share.size != secret.size:
        raise ValueError(f"share and secret differ in size: {share.size} vs {secret.size}")
    if share.size < 10 * bins:
        raise ValueError(f"need at least {10 * bins} share elements for {bins} bins, got {share.size}")
    unit = to_unit_interval(share)
    top = (share.view(np.uint64) >> np.uint64(56)).astype(np.int64)
    counts = np.bincount(top, minlength=256)
    out = {"chi2_p": float(stats.chisquare(counts).pvalue),
           "ks_p": float(stats.kstest(unit, "uniform").pvalue),
           "corr": float(np.corrcoef(unit, secret)[0, 1]) if secret.std() > 0 else 0.0}
    if other_share is not None:
        out["two_sample_p"] = float(stats.ks_2samp(unit, to_unit_interval(other_share)).pvalue)
    return out


def to_unit_interval(share: np.ndarray) -> np.ndarray:
    """Map ring elements (int64 read as unsigned 64-bit) to [0, 1)."""
    return np.asarray(share, dtype=np.int64).ravel().view(np.uint64).astype(np.float64) / 2.0**64


# ------------------------------------------------------------------------------------------------
# Where MPC is slow: one operation at a time
# ------------------------------------------------------------------------------------------------

def _op_table(n: int):
    """``name -> (inputs builder, operation)`` for :func:`op_costs`; the same code runs on
    torch tensors (plaintext) and CrypTensors (MPC)."""
    f = torch.nn.functional
    return {
        "add x + y": (lambda a, b, img: (a, b), lambda a, b: a + b),
        "multiply by public 3": (lambda a, b, img: (a, b), lambda a, b: a * 3),
        "multiply x * y": (lambda a, b, img: (a, b), lambda a, b: a * b),
        "matmul (n/64 x 64)(64 x n/64)": (lambda a, b, img: (a.reshape(-1, 64), b.reshape(64, -1)),
                                          lambda a, b: a.matmul(b)),
        "compare x > y": (lambda a, b, img: (a, b), lambda a, b: a > b),
        "ReLU": (lambda a, b, img: (a, b), lambda a, b: a.relu()),
        "avg pool 2x2": (lambda a, b, img: (img, b), lambda a, b: f.avg_pool2d(a, 2)
                         if torch.is_tensor(a) else a.avg_pool2d(2)),
        "max pool 2x2": (lambda a, b, img: (img, b), lambda a, b: f.max_pool2d(a, 2)
                         if torch.is_tensor(a) else a.max_pool2d(2)),
        "exp": (lambda a, b, img: (a, b), lambda a, b: a.exp()),
        "reciprocal 1/x": (lambda a, b, img: (a.abs() + 1, b), lambda a, b: a.reciprocal()),
        "softmax (rows of 2)": (lambda a, b, img: (a.reshape(-1, 2), b), lambda a, b: a.softmax(1)),
    }


def _op_party(rank: int, n: int, repeats: int):
    crypten = crypten_module()
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    img = torch.rand(n // 64, 1, 8, 8, generator=g)
    rows = []
    for name, (make, op) in _op_table(n).items():
        pa, pb = make(a, b, img)
        ea, eb = crypten.cryptensor(pa, src=0), crypten.cryptensor(pb, src=1)
        times, plain_times = [], []
        _reset_stats()
        for _ in range(repeats):
            start = time.perf_counter()
            out = op(ea, eb)
            times.append(time.perf_counter() - start)
        stats = _stats()
        for _ in range(repeats):
            start = time.perf_counter()
            expected = op(pa, pb)
            plain_times.append(time.perf_counter() - start)
        error = (out.get_plain_text() - expected.float()).abs()
        rows.append({"operation": name, "mpc_s": float(np.median(times)),
                     "plain_s": float(np.median(plain_times)),
                     "rounds": stats["rounds"] / repeats, "bytes": stats["bytes"] / repeats,
                     "max_abs_error": float(error.max()),
                     "off_by_0.01": int((error > 0.01).sum()), "elements": int(error.numel())})
    return rows


def op_costs(n: int = 4096, repeats: int = 3, provider: str = "TTP") -> list[dict[str, Any]]:
    """Time, rounds and bytes of single MPC operations on ``n`` elements vs the same op in torch.

    One row per operation: ``operation, mpc_s, plain_s, slowdown, rounds, bytes, max_abs_error,
    off_by_0.01`` (how many of ``elements`` outputs missed the plaintext by more than 0.01)
    (rounds and bytes as in :func:`_total`: CrypTen's logs, party 0's dealer requests included).
    """
    if n < 64 or n % 64:
        raise ValueError(f"n must be a positive multiple of 64, got {n}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    values = run_parties(_op_party, args=(n, repeats), provider=provider)
    rows = []
    for r0, r1 in zip(*values):
        rows.append({**r0, "mpc_s": max(r0["mpc_s"], r1["mpc_s"]),
                     "slowdown": max(r0["mpc_s"], r1["mpc_s"]) / max(r0["plain_s"], 1e-7),
                     "rounds": max(r0["rounds"], r1["rounds"]),
                     "bytes": (r0["bytes"] + r1["bytes"]) / 2})
    return rows


# ------------------------------------------------------------------------------------------------
# Scenario 2: private training on two hospitals' secret-shared data
# ------------------------------------------------------------------------------------------------

def training_net(image_size: int = 28, hidden: int = 32) -> nn.Module:
    """The jointly trained model: 2x2 average pooling, then a one-hidden-layer ReLU MLP, one logit.

    Small on purpose: every multiplication and ReLU of every step runs under MPC.
    """
    features = (image_size // 2) ** 2
    return nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


def split_hospitals(dataset, fraction: float = 0.5, seed: int = 0):
    """Split a TensorDataset into two disjoint hospitals (seeded), ``fraction`` of it to the first."""
    from torch.utils.data import TensorDataset

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    x, y = dataset.tensors
    if len(x) < 2:
        raise ValueError(f"need at least 2 examples to split, got {len(x)}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = min(max(1, int(round(fraction * len(x)))), len(x) - 1)
    return TensorDataset(x[perm[:cut]], y[perm[:cut]]), TensorDataset(x[perm[cut:]], y[perm[cut:]])


def _batches(n: int, epochs: int, batch_size: int, seed: int):
    """The public schedule: a seeded permutation per epoch, cut into batches."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            yield perm[i:i + batch_size]


def _training_party(rank: int, hospitals, epochs: int, batch_size: int, lr: float, seed: int):
    crypten = crypten_module()
    torch.manual_seed(seed)
    init = training_net(hospitals[0][0].shape[-1])  # public initialisation from a shared seed
    shape = hospitals[0][0].shape[1:]
    secret_model = crypten.nn.from_pytorch(init, torch.zeros(1, *shape)).encrypt(src=0)
    secret_model.train()
    xs, ys = [], []
    for owner, (x, y) in enumerate(hospitals):  # each hospital shares its own data; sizes are public
        mine = rank == owner
        xs.append(crypten.cryptensor(x if mine else torch.zeros_like(x), src=owner))
        ys.append(crypten.cryptensor(y.float().unsqueeze(1) if mine else torch.zeros(len(y), 1),
                                     src=owner))
    X, Y = crypten.cat(xs), crypten.cat(ys)
    loss_fn = crypten.nn.BCEWithLogitsLoss(skip_forward=True)  # backward needs sigmoid only
    _reset_stats()
    start = time.perf_counter()
    steps = 0
    for idx in _batches(X.size(0), epochs, batch_size, seed):
        loss = loss_fn(secret_model(X[idx]), Y[idx])
        secret_model.zero_grad()
        loss.backward()
        secret_model.update_parameters(lr)
        steps += 1
    seconds = time.perf_counter() - start
    # Both hospitals jointly own the result: open the weights to both at the end.
    weights = [p.get_plain_text() for p in secret_model.parameters()]
    return {"weights": weights, "seconds": seconds, "steps": steps, "stats": _stats()}


def _hospital_tensors(hospital_a, hospital_b):
    out = []
    for name, ds in (("hospital_a", hospital_a), ("hospital_b", hospital_b)):
        tensors = getattr(ds, "tensors", None)
        if tensors is None or len(tensors) != 2 or len(tensors[0]) == 0:
            raise ValueError(f"{name} must be a non-empty TensorDataset(images, labels)")
        out.append((_check_images(tensors[0]), tensors[1].long()))
    if out[0][0].shape[1:] != out[1][0].shape[1:]:
        raise ValueError(f"the hospitals' images differ in shape: {tuple(out[0][0].shape[1:])} vs "
                         f"{tuple(out[1][0].shape[1:])}")
    return out


def private_training(hospital_a, hospital_b, epochs: int = 2, batch_size: int = 128,
                     lr: float = 0.5, seed: int = 0, provider: str = "TTP",
                     timeout: float = 900) -> dict[str, Any]:
    """Train :func:`training_net` with SGD on the union of two hospitals' secret-shared data.

    Hospital A (party 0) and B (party 1) each secret-share their images and labels; forward,
    backward and update run on shares; the weights are opened at the end. Returns ``{"model"
    (torch, with the trained weights), "seconds", "steps", "rounds", "bytes", "comm_seconds"}``.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, "
                         f"{batch_size}, {lr}")
    hospitals = _hospital_tensors(hospital_a, hospital_b)
    values = run_parties(_training_party, args=(hospitals, epochs, batch_size, lr, seed),
                         provider=provider, timeout=timeout)
    model = training_net(hospitals[0][0].shape[-1])
    with torch.no_grad():
        for p, w in zip(model.parameters(), values[0]["weights"]):
            p.copy_(w.reshape(p.shape))
    return {"model": model.eval(), "seconds": max(v["seconds"] for v in values),
            "steps": values[0]["steps"], **_total([v["stats"] for v in values])}


def plaintext_training(hospital_a, hospital_b, epochs: int = 2, batch_size: int = 128,
                       lr: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """The same training as :func:`private_training` (same init, batches, SGD) on pooled cleartext."""
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, "
                         f"{batch_size}, {lr}")
    (xa, ya), (xb, yb) = _hospital_tensors(hospital_a, hospital_b)
    X, Y = torch.cat([xa, xb]), torch.cat([ya, yb]).float().unsqueeze(1)
    torch.manual_seed(seed)
    model = training_net(X.shape[-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    start, steps = time.perf_counter(), 0
    for idx in _batches(len(X), epochs, batch_size, seed):
        optimizer.zero_grad()
        loss_fn(model(X[idx]), Y[idx]).backward()
        optimizer.step()
        steps += 1
    return {"model": model.eval(), "seconds": time.perf_counter() - start, "steps": steps}


@torch.no_grad()
def binary_auc(model: nn.Module, dataset) -> float:
    """Test ROC AUC of a one-logit model on a TensorDataset."""
    from . import metrics

    x, y = dataset.tensors
    with torch.no_grad():
        return metrics.auc_score(y.numpy(), model.eval()(x.float()).squeeze(1).numpy())
