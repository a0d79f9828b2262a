"""Models DP-SGD can train, and the engine that clips their per-sample gradients.

* :func:`check_model` refuses a model DP-SGD cannot train (BatchNorm mixes examples, so clipping
  one example's gradient no longer bounds its influence), saying what to do;
* :func:`make_dp_ready` makes one that it can: BatchNorm replaced by GroupNorm
  (``ModuleValidator.fix``) and in-place operations turned off (MONAI builds
  ``ReLU(inplace=True)``, on which Opacus' backward hooks fail);
* :func:`grad_sample_mode_for` picks the engine: book-keeping (:mod:`pets_lite.clipping`) where it
  has a rule for every layer, else Opacus' ghost clipping, else its hooks.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .accounting import DPConfigError

#: How per-sample gradients are clipped: "bk" (book-keeping, :mod:`pets_lite.clipping`, one backward
#: pass) and Opacus' "ghost" (two backward passes), "hooks" and "functorch"; "auto" picks the first
#: that supports every trainable layer of the model (:func:`grad_sample_mode_for`).
GRAD_SAMPLE_MODES = ("auto", "bk", "ghost", "hooks", "functorch")


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model`` (they mix examples, so DP-SGD cannot use them)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_model(model: nn.Module) -> None:
    """Raise :class:`DPConfigError` for a model DP-SGD cannot train (BatchNorm, in-place ops...)."""
    from opacus.validators import ModuleValidator

    bn = batchnorm_layers(model)
    if bn:
        raise DPConfigError(
            f"the model has BatchNorm layers ({', '.join(bn[:4])}{'...' if len(bn) > 4 else ''}): "
            "BatchNorm normalises with statistics of the whole batch, so one example's gradient "
            "depends on the others and per-sample clipping no longer bounds its influence. Build "
            "the model with norm='group', or call pets_lite.dp.make_dp_ready(model) to replace "
            "them by GroupNorm.")
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise DPConfigError("Opacus cannot train this model: " + "; ".join(map(str, errors))
                            + ". Call pets_lite.dp.make_dp_ready(model) first.")


class OutOfPlace(nn.Module):
    """Returns a copy of its input, so that a later in-place op does not touch a hooked output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def make_dp_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` Opacus can train: BatchNorm -> GroupNorm, no in-place operations.

    Opacus records activations and backprops with full backward hooks, and PyTorch forbids
    in-place changes to a hooked module's output (pytorch/pytorch#61519). MONAI networks do both
    kinds: ``ReLU(inplace=True)`` (turned off here via each module's ``inplace`` flag) and, in its
    ResNet blocks, ``out += residual`` on the output of the last norm layer (each norm layer is
    followed here by :class:`OutOfPlace`, a copy). ``ModuleValidator.fix`` swaps BatchNorm for
    GroupNorm, and the result is validated strictly.
    """
    from opacus.validators import ModuleValidator

    model = copy.deepcopy(model)
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the validator warns about each replacement it makes
        model = ModuleValidator.fix(model)
    norms = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, norms) and not isinstance(parent, nn.Sequential):
                setattr(parent, name, nn.Sequential(child, OutOfPlace()))
    ModuleValidator.validate(model, strict=True)
    return model


def grad_sample_mode_for(model: nn.Module) -> str:
    """The default DP-SGD engine for ``model``: ``"bk"`` (book-keeping clipping, one backward
    pass) when :mod:`pets_lite.clipping` can clip it (a rule for every trainable layer, no tied
    weights), else ``"ghost"`` when Opacus' fast-gradient-clipping module supports them all, else
    ``"hooks"``."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping as Ghost

    from .. import clipping

    if clipping.refusal(model) is None:
        return "bk"
    for _, module in clipping.trainable_layers(model):
        if type(module) not in Ghost.GRAD_SAMPLERS and type(module) not in Ghost.NORM_SAMPLERS:
            return "hooks"
    return "ghost"


def resolve_mode(model: nn.Module, grad_sample_mode: str) -> str:
    """The engine that will clip ``model``: ``grad_sample_mode`` itself, or the default for
    "auto"; :class:`DPConfigError` for an unknown mode or a model book-keeping cannot clip."""
    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise DPConfigError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, "
                            f"got {grad_sample_mode!r}")
    mode = grad_sample_mode_for(model) if grad_sample_mode == "auto" else grad_sample_mode
    if mode == "bk":
        from .. import clipping

        reason = clipping.refusal(model)
        if reason:
            raise DPConfigError(f"grad_sample_mode='bk': {reason}; use 'auto', 'ghost' or 'hooks'")
    return mode
