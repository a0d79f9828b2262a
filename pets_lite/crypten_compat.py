"""CrypTen 0.4.1 on this PyTorch: the four repairs, applied when CrypTen is first used.

CrypTen's last release (0.4.1, 2022) predates several PyTorch changes. :func:`crypten_module` is
the one way the library imports CrypTen: the first call applies every repair of :data:`FIXES`
(unless ``PETS_CRYPTEN_SHIM=0``, read through :func:`pets_lite.config.crypten_shim_enabled`, which
the tests use to show each breakage) and imports ``crypten``; later calls return the same module.
Importing :mod:`pets_lite.smpc` does not import CrypTen. Never import ``crypten.models`` (it
imports torchvision).

Each repair names the failure it prevents and its upstream issue; where we found none in
facebookresearch/CrypTen or pytorch/pytorch, the comment says so.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Sequence

import torch

from . import config

#: The four repairs :func:`apply_shim` knows, by name, in the order they apply.
FIXES = ("onnx_registration", "onnx_dynamo", "onnx_dedup", "load_weights_only")

#: For each repair: the failure without it, its upstream cause, and the upstream issue.
BREAKAGES = {
    "onnx_registration": (
        "import crypten: No module named 'torch.onnx._internal.registration'",
        "the TorchScript exporter's internals moved to torch.onnx._internal.torchscript_exporter",
        "none found; CrypTen#430 is the same break one torch generation earlier"),
    "onnx_dynamo": (
        "crypten.nn.from_pytorch: No module named 'onnxscript'",
        "torch.onnx.export defaults to dynamo=True since torch 2.9",
        "none found in CrypTen"),
    "onnx_dedup": (
        "from_pytorch with BatchNorm: CrypTen does not support ONNX op Identity",
        "the exporter de-duplicates equal initializers through Identity nodes",
        "CrypTen#455 (also #418, #508); the pass came with pytorch/pytorch#68202"),
    "load_weights_only": (
        "crypten.load: Weights only load failed",
        "torch.load defaults to weights_only=True since torch 2.6",
        "none found in CrypTen"),
}

_APPLIED: set[str] = set()


def _fix_onnx_registration() -> None:
    """Repair 1: ``import crypten`` fails with ``No module named
    'torch.onnx._internal.registration'``.

    CrypTen's ``crypten/nn/onnx_converter.py`` imports the symbolic-function registry from
    ``torch.onnx._internal.registration``; in this PyTorch the TorchScript exporter's internals
    live under ``torch.onnx._internal.torchscript_exporter``. We alias the old module name to the
    new module before CrypTen is imported. Upstream issue: none found for this move; CrypTen#430
    (fixed by CrypTen#437) is the same kind of break when torch 1.13 replaced
    ``torch.onnx.symbolic_registry``.
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
    """CrypTen's ``_export_pytorch_model`` with repairs 2 and 3 (whichever are applied).

    Repair 2 (``onnx_dynamo``): ``crypten.nn.from_pytorch`` fails with ``No module named
    'onnxscript'``. ``torch.onnx.export`` defaults to ``dynamo=True`` since PyTorch 2.9 (its
    docstring: "versionchanged 2.9: dynamo is now True by default"); the new exporter needs
    ``onnxscript`` and emits a graph CrypTen's converter cannot read. We pass ``dynamo=False``,
    the TorchScript exporter CrypTen was written for. Upstream issue: none found in CrypTen.

    Repair 3 (``onnx_dedup``): a model whose initializers hold equal values (a fresh BatchNorm:
    ``weight`` and ``running_var`` are both ones) fails with ``CrypTen does not support ONNX op
    Identity``: the TorchScript exporter de-duplicates such initializers and feeds the copies
    through ``Identity`` nodes, an op CrypTen's converter has no module for (CrypTen#455; the
    de-duplication pass came with pytorch/pytorch#68202). During CrypTen's export only, we skip
    that pass (``_jit_pass_onnx_deduplicate_initializers``), as older exporters did.
    """
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
    """Repair 4: ``crypten.load`` fails with ``Weights only load failed``.

    PyTorch 2.6 changed ``torch.load``'s default to ``weights_only=True``, which refuses to
    unpickle CrypTen's ``MPCTensor`` / ``ArithmeticSharedTensor`` objects; CrypTen binds
    ``torch.load`` as the default ``load_closure`` of ``crypten.load`` and
    ``crypten.load_from_party``. We make that default ``torch.load(..., weights_only=False)``: full
    unpickling, which runs code from the file, so load only shares you saved yourself. Upstream
    issue: none found in CrypTen.
    """
    closure = functools.partial(torch.load, weights_only=False)
    crypten.load.__defaults__ = (closure,)
    defaults = list(crypten.load_from_party.__defaults__)
    defaults[-1] = closure
    crypten.load_from_party.__defaults__ = tuple(defaults)


def apply_shim(fixes: Sequence[str] = FIXES):
    """Apply the named repairs (all by default), import CrypTen, and return the ``crypten``
    module. Idempotent; a repair applied once stays applied in this process."""
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
    """The ``crypten`` module, repaired for this PyTorch on first use (``PETS_CRYPTEN_SHIM=0``:
    imported as it is, so that each breakage shows)."""
    if not config.crypten_shim_enabled():
        return importlib.import_module("crypten")
    return apply_shim(FIXES)


def applied() -> tuple[str, ...]:
    """The repairs applied in this process so far, in :data:`FIXES` order."""
    return tuple(f for f in FIXES if f in _APPLIED)
