"""Per-sample clipping in one backward pass ("book-keeping") for DP-SGD, with Opacus doing the rest.

DP-SGD needs every example's gradient norm :math:`\\lVert g_i \\rVert`, then the sum of the clipped
gradients :math:`\\sum_i c_i g_i` with :math:`c_i = \\min(1, C / \\lVert g_i \\rVert)`. Opacus
offers per-sample gradients by hooks or functorch (every :math:`g_i` instantiated, stored and
clipped) and ghost clipping (norms first, then a *second* backward pass of the re-weighted loss
:math:`\\sum_i c_i \\ell_i`). Book-keeping (Bu et al., ICML 2023) keeps what one backward pass
already has, each layer's input activations :math:`A` and output gradients :math:`G`, and finishes
from them:

* **norms**, layer by layer, exactly: from the per-example gradients :math:`G_i^\\top A_i`
  (cost :math:`T d p` per example, for a layer with :math:`T` positions, :math:`d` inputs and
  :math:`p` outputs), computed chunk by chunk (no large temporary) and *kept* when they fit in
  :data:`KEEP_BYTES`; or, where that is cheaper and they are not kept, from the ghost norm
  :math:`\\langle A_i A_i^\\top, G_i G_i^\\top \\rangle` (cost :math:`T^2 (d + p)`; Li et al.
  2022), the choice made per layer as in mixed ghost clipping (Bu et al. 2022). A linear layer on
  one position per example uses :math:`\\lVert g_i \\rVert^2 \\lVert a_i \\rVert^2`;
* **the clipped sum**: the factors times the kept per-example gradients, or else the layer's
  ordinary weight gradient with the smaller of :math:`A_i`, :math:`G_i` scaled by :math:`c_i`
  (one call of the kernel autograd would have used).

The backward pass differentiates only with respect to the layers' outputs, so autograd never
computes the ordinary weight gradients that the other engines compute and then discard. Poisson
sampling, noise, scaling and accounting stay Opacus': :func:`make_private` hands the clipped sum to
``DPOptimizerFastGradientClipping``, which is what Opacus' own ghost clipping gives it after its
second backward pass. Supported layers: ``Linear``, ``Conv2d`` (``groups=1``, zero padding given as
numbers) and affine ``GroupNorm``; :func:`unsupported_layers` names the others, and
:func:`pets_lite.dp.grad_sample_mode_for` falls back to Opacus for models that have them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Examples per chunk are chosen so that a chunk's temporaries stay below this many bytes.
CHUNK_BYTES = 4 * 2**20
#: Per-example gradients are kept (the clipped sum is then one product with the clipping factors)
#: for the layers that fit in this many bytes in all; the others are summed by a weight-gradient
#: call.
KEEP_BYTES = 256 * 2**20
#: On the CPU, convolutions with at least this many output positions and input channels
#: instantiate per-example gradients with a grouped weight-gradient convolution (no unfolded copy
#: of the inputs); the others unfold. Measured on 2 cores (the 16->32 conv at 14x14 of the chapter's
#: CNN: 8 ms instead of 13 per batch of 256; 1 input channel or a 7x7 map: unfolding is faster).
DIRECT_MIN_POSITIONS = 64
DIRECT_MIN_CHANNELS = 8
#: Opacus' clipping factor, ``min(1, C / (norm + 1e-6))``: the same constant, the same factors.
EPS = 1e-6


def supported(module: nn.Module) -> bool:
    """Whether this engine has an exact per-sample rule for ``module`` (its own parameters)."""
    if type(module) is nn.Linear:
        return True
    if type(module) is nn.Conv2d:
        return (module.groups == 1 and module.padding_mode == "zeros"
                and not isinstance(module.padding, str))
    if type(module) is nn.GroupNorm:
        return module.affine
    return False


def trainable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module that owns a trainable parameter."""
    return [(name, m) for name, m in model.named_modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))]


def unsupported_layers(model: nn.Module) -> list[str]:
    """Trainable layers without a rule here, as ``"name (Type)"``; empty when all are supported.

    >>> unsupported_layers(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(),
    ...                                  nn.LazyLinear(2)))
    ['3 (LazyLinear)']
    """
    return [f"{name or '<model>'} ({type(m).__name__})" for name, m in trainable_layers(model)
            if not supported(m)]


def refusal(model: nn.Module) -> str | None:
    """Why this engine cannot clip ``model`` (a layer without a rule, or a parameter two layers
    share, whose per-layer squared norms would not add up), or None when it can.

    >>> tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)); tied[1].weight = tied[0].weight
    >>> refusal(tied)
    '0 and 1 share a parameter (tied weights)'
    """
    bad = unsupported_layers(model)
    if bad:
        return f"no per-sample rule for {', '.join(bad)}"
    owners: dict[int, str] = {}
    for name, m in trainable_layers(model):
        for p in m.parameters(recurse=False):
            if id(p) in owners:
                return f"{owners[id(p)]} and {name} share a parameter (tied weights)"
            owners[id(p)] = name
    return None


def _chunks(n: int, bytes_per_example: int):
    """Slices of at most ``CHUNK_BYTES // bytes_per_example`` examples covering ``range(n)``."""
    step = max(1, CHUNK_BYTES // max(1, bytes_per_example))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def _ghost_is_cheaper(positions: int, d: int, p: int) -> bool:
    """Mixed ghost clipping's rule: the ghost norm (T^2 (d+p)) beats instantiation (T d p)."""
    return positions * (d + p) < d * p


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each ``x[i]`` (one fused pass, no squared copy)."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1).square()


def _dots(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``<x[i], y[i]>`` for each ``i`` (a batched 1 x k @ k x 1 product, no elementwise copy)."""
    n = x.shape[0]
    return torch.bmm(x.reshape(n, 1, -1), y.reshape(n, -1, 1)).view(n)


def _per_example_norms(n: int, positions: int, d: int, p: int, blocks, like: torch.Tensor,
                       kept: torch.Tensor | None = None) -> torch.Tensor:
    """Squared norms of the per-example gradients ``G_i^T A_i`` (``A_i``: T x d inputs, ``G_i``:
    T x p output gradients), chunk by chunk; ``blocks(s)`` gives ``(A, G)`` for the chunk ``s``.

    With ``kept`` (an ``(n, p, d)`` buffer) the per-example gradients are instantiated into it, so
    that the clipped sum is one product with the clipping factors. Otherwise the ghost norm is used
    where it is cheaper (mixed ghost clipping) and the gradients are instantiated chunk by chunk.
    """
    ghost = kept is None and _ghost_is_cheaper(positions, d, p)
    per_example = 4 * (positions * d + (2 * positions * positions if ghost else p * d))
    sq = torch.empty(n, dtype=like.dtype, device=like.device)
    for s in _chunks(n, per_example):
        a, g = blocks(s)
        if ghost:
            sq[s] = _dots(torch.bmm(a, a.transpose(1, 2)), torch.bmm(g, g.transpose(1, 2)))
        else:
            grads = torch.bmm(g.transpose(1, 2), a, out=None if kept is None else kept[s])
            sq[s] = _sq_norms(grads)
    return sq


class _Workspace:
    """Buffers for kept per-example gradients that outlive a step (no fresh allocation, and no page
    faults, at every step), at most :data:`KEEP_BYTES` in all; with Poisson sampling the batch size
    varies, so each buffer grows to the largest batch seen (with 25% headroom)."""

    def __init__(self):
        self._buffers: dict = {}

    def get(self, key, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        """An uninitialised ``shape`` view, or None when the budget has no room for it."""
        buf = self._buffers.get(key)
        if (buf is not None and buf.shape[0] >= shape[0] and buf.shape[1:] == shape[1:]
                and buf.dtype == like.dtype and buf.device == like.device):
            return buf[: shape[0]]
        self._buffers.pop(key, None)
        rows = math.ceil(shape[0] * 1.25)
        used = sum(b.numel() * b.element_size() for b in self._buffers.values())
        if used + rows * math.prod(shape[1:]) * like.element_size() > KEEP_BYTES:
            return None
        buf = torch.empty((rows, *shape[1:]), dtype=like.dtype, device=like.device)
        self._buffers[key] = buf
        return buf[: shape[0]]


@dataclass
class _Record:
    module: nn.Module
    activations: torch.Tensor
    output: torch.Tensor
    version: int


class BookKeeping:
    """Records each supported layer's input and output in the forward pass of ``model`` and, from
    one backward pass of the per-sample losses, writes ``p.grad = sum_i c_i grad_i`` for every
    trainable parameter (``c_i = min(1, max_grad_norm / (norm_i + 1e-6))``, as in Opacus).

    >>> _ = torch.manual_seed(0); net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> bk = BookKeeping(net, max_grad_norm=0.1)
    >>> losses = F.cross_entropy(net(torch.randn(5, 3)), torch.tensor([0, 1, 0, 1, 1]),
    ...                          reduction="none")
    >>> norms = bk.backward(losses)
    >>> total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    >>> bool(total <= 5 * 0.1)
    True
    """

    def __init__(self, model: nn.Module, max_grad_norm: float):
        reason = refusal(model)
        if reason:
            raise ValueError(f"book-keeping clipping: {reason}; use Opacus' grad_sample_mode "
                             "'ghost' or 'hooks' for this model")
        if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
            raise ValueError(f"max_grad_norm must be a finite number > 0, got {max_grad_norm!r}")
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._records: list[_Record] = []
        self._workspace = _Workspace()
        self._handles = [model.register_forward_pre_hook(self._start)]
        self._handles += [m.register_forward_hook(self._record) for _, m in trainable_layers(model)]

    def remove_hooks(self) -> None:
        """Detach from the model (it is left as it was before)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._records = [], []

    def _start(self, module, inputs) -> None:
        self._records = []  # a new forward pass of the whole model: forget an unfinished one

    def _record(self, module: nn.Module, inputs, output) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        if any(r.module is module for r in self._records):
            raise RuntimeError(
                f"{type(module).__name__} ran twice in one forward pass (shared weights): its "
                "per-sample gradient is a sum over both calls, which book-keeping does not track; "
                "use Opacus' grad_sample_mode 'hooks' for this model")
        self._records.append(_Record(module, inputs[0].detach(), output, output._version))

    def backward(self, loss_per_sample: torch.Tensor) -> torch.Tensor:
        """Clip and sum the per-sample gradients of ``loss_per_sample`` (shape ``(n,)``) into
        ``p.grad``; returns the per-sample gradient norms before clipping."""
        if loss_per_sample.ndim != 1:
            raise ValueError("expected one loss per example, shape (n,), got "
                             f"{tuple(loss_per_sample.shape)}")
        records, self._records = self._records, []
        n = loss_per_sample.shape[0]
        if n and not records:
            raise RuntimeError("no layer was recorded since the last backward pass: run the model "
                               "in training mode (model.train()) with gradients enabled first")
        for r in records:
            if r.activations.shape[0] != n:
                raise ValueError(f"{type(r.module).__name__} saw a batch of "
                                 f"{r.activations.shape[0]} "
                                 f"but there are {n} losses: the batch must be the first dimension")
            if r.output._version != r.version:
                raise RuntimeError(f"the output of {type(r.module).__name__} was changed in place "
                                   "after the layer ran; turn in-place operations off "
                                   "(pets_lite.dp.make_dp_ready)")
        grads = (torch.autograd.grad(loss_per_sample.sum(), [r.output for r in records],
                                     allow_unused=True) if n and records else [])
        sq = loss_per_sample.detach().new_zeros(n)
        work = []
        for r, g in zip(records, grads):
            if g is not None:  # None: the layer's output did not reach the loss (zero gradient)
                norms, finish = _RULES[type(r.module)](r.module, r.activations, g.detach(),
                                                       self._workspace)
                sq += norms
                work.append(finish)
        norms = sq.sqrt()
        coef = (self.max_grad_norm / (norms + EPS)).clamp(max=1.0)
        for p in self.params:
            p.grad = None
        for finish in work:  # each parameter belongs to one layer (refusal: no tied weights)
            for p, grad in finish(coef).items():
                if p.requires_grad:
                    p.grad = grad
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return norms


def _linear(m: nn.Linear, a: torch.Tensor, g: torch.Tensor, ws: _Workspace):
    """Linear layer on (n, ..., d) inputs: exact ghost norm for 2-D inputs, mixed rule otherwise."""
    n, d, p = a.shape[0], m.in_features, m.out_features
    a3, g3 = a.reshape(n, -1, d), g.reshape(n, -1, p)
    positions, kept = a3.shape[1], None
    if positions == 1:  # ||g a^T||^2 = ||g||^2 ||a||^2
        sq = g3[:, 0].square().sum(1) * a3[:, 0].square().sum(1)
    else:
        kept = ws.get(m, (n, p, d), g)
        sq = _per_example_norms(n, positions, d, p, lambda s: (a3[s], g3[s]), g, kept)
    if m.bias is not None and m.bias.requires_grad:
        sq = sq + g3.sum(1).square().sum(1)

    def finish(coef):
        if kept is not None:
            weight = (coef @ kept.reshape(n, -1)).view(p, d)
        else:
            c = coef.view(-1, 1, 1)
            ac, gc = (a3 * c, g3) if d <= p else (a3, g3 * c)
            weight = gc.reshape(-1, p).T @ ac.reshape(-1, d)
        out = {m.weight: weight}
        if m.bias is not None:
            out[m.bias] = coef @ g3.sum(1)
        return out

    return sq, finish


def _conv2d(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, ws: _Workspace):
    """Conv2d: the Linear rule on unfolded inputs (T output positions, d = C_in k_h k_w)."""
    from opacus.utils.tensor_utils import unfold2d

    n, p = g.shape[0], g.shape[1]
    positions = g.shape[2] * g.shape[3]
    d = a.shape[1] * m.kernel_size[0] * m.kernel_size[1]

    def blocks(s):
        u = unfold2d(a[s], kernel_size=m.kernel_size, padding=m.padding, stride=m.stride,
                     dilation=m.dilation)  # (chunk, d, T)
        return u.transpose(1, 2), g[s].reshape(u.shape[0], p, positions).transpose(1, 2)

    kept = ws.get(m, (n, p, d), g)
    if (a.device.type == "cpu" and positions >= DIRECT_MIN_POSITIONS
            and a.shape[1] >= DIRECT_MIN_CHANNELS):
        sq = _conv2d_direct_norms(m, a, g, kept)
    else:
        sq = _per_example_norms(n, positions, d, p, blocks, g, kept)
    if m.bias is not None and m.bias.requires_grad:
        sq = sq + g.sum((2, 3)).square().sum(1)

    def finish(coef):
        if kept is not None:
            weight = (coef @ kept.reshape(n, -1)).view_as(m.weight)
        else:  # the weight gradient is bilinear in (inputs, output gradients): scale the smaller
            c = coef.view(-1, 1, 1, 1)
            ac, gc = (a * c, g) if a.numel() <= g.numel() else (a, g * c)
            weight = torch.nn.grad.conv2d_weight(ac, m.weight.shape, gc, m.stride, m.padding,
                                                 m.dilation, 1)
        out = {m.weight: weight}
        if m.bias is not None:
            out[m.bias] = coef @ g.sum((2, 3))
        return out

    return sq, finish


def _conv2d_direct_norms(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor,
                         kept: torch.Tensor | None) -> torch.Tensor:
    """Per-example weight gradients of a chunk of k examples as *one* grouped weight-gradient
    convolution (groups = k: example i's inputs only meet its own output gradients), without the
    unfolded copy of the inputs; faster on the CPU for large feature maps."""
    n, c, p = a.shape[0], a.shape[1], g.shape[1]
    d = c * m.kernel_size[0] * m.kernel_size[1]
    sq = torch.empty(n, dtype=g.dtype, device=g.device)
    for s in _chunks(n, 4 * p * d):
        k = s.stop - s.start
        grads = torch.nn.grad.conv2d_weight(
            a[s].reshape(1, k * c, *a.shape[2:]), (k * p, c, *m.kernel_size),
            g[s].reshape(1, k * p, *g.shape[2:]), m.stride, m.padding, m.dilation, k).view(k, p, d)
        if kept is not None:
            kept[s] = grads
        sq[s] = _sq_norms(grads)
    return sq


def _group_norm(m: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, ws: _Workspace):
    """Affine GroupNorm: per-example gradients are per-channel sums (n, C), kept for the sum."""
    n, c = a.shape[0], a.shape[1]
    gw = torch.empty(n, c, dtype=g.dtype, device=g.device)
    for s in _chunks(n, 4 * a[0].numel()):
        xhat = F.group_norm(a[s], m.num_groups, eps=m.eps)
        gw[s] = xhat.mul_(g[s]).reshape(xhat.shape[0], c, -1).sum(2)
    gb = g.reshape(n, c, -1).sum(2)
    sq = gw.square().sum(1) * m.weight.requires_grad + gb.square().sum(1) * m.bias.requires_grad

    def finish(coef):
        return {m.weight: coef @ gw, m.bias: coef @ gb}

    return sq, finish


_RULES = {nn.Linear: _linear, nn.Conv2d: _conv2d, nn.GroupNorm: _group_norm}


def clipped_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float):
    """``(per-sample norms, clipped sum flattened in parameter order)`` of the cross-entropy of
    ``model`` on one batch, by book-keeping; the model's ``.grad`` are left as they were."""
    saved = [p.grad for p in model.parameters()]
    was_training = model.training
    engine = BookKeeping(model.train(), max_grad_norm)
    try:
        norms = engine.backward(F.cross_entropy(model(x), y, reduction="none"))
        flat = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    finally:
        engine.remove_hooks()
        model.train(was_training)
        for p, g in zip(model.parameters(), saved):
            p.grad = g
    return norms.detach(), flat.detach()


class ClippedLoss:
    """Per-sample losses whose ``backward()`` runs book-keeping clipping (mean for ``item()``)."""

    def __init__(self, engine: BookKeeping, loss_per_sample: torch.Tensor):
        self.engine, self.loss_per_sample = engine, loss_per_sample

    def backward(self) -> None:
        """Write the clipped per-sample gradient sum into ``p.grad``."""
        self.engine.backward(self.loss_per_sample)

    def detach(self) -> torch.Tensor:
        """The mean loss, detached."""
        return self.loss_per_sample.detach().mean()

    def item(self) -> float:
        """The mean loss as a number."""
        return float(self.detach())


class ClippedCriterion:
    """Wraps a loss module (``reduction`` switched to ``"none"``) so that it returns a
    :class:`ClippedLoss`, the same calling convention as Opacus' ghost-clipping criterion."""

    def __init__(self, engine: BookKeeping, criterion: nn.Module):
        self.engine, self.criterion = engine, criterion

    def __call__(self, *args, **kwargs) -> ClippedLoss:
        old, self.criterion.reduction = self.criterion.reduction, "none"
        try:
            losses = self.criterion(*args, **kwargs)
        finally:
            self.criterion.reduction = old
        return ClippedLoss(self.engine, losses)


class BookKeepingModule(nn.Module):
    """The model with a :class:`BookKeeping` engine attached (``remove_hooks()`` detaches it)."""

    def __init__(self, module: nn.Module, engine: BookKeeping):
        super().__init__()
        self._module, self.engine = module, engine

    def forward(self, *args, **kwargs):
        return self._module(*args, **kwargs)

    def remove_hooks(self) -> None:
        """Detach the engine from the wrapped model."""
        self.engine.remove_hooks()


def make_private(privacy_engine, *, module: nn.Module, optimizer: torch.optim.Optimizer,
                 data_loader, criterion: nn.Module, noise_multiplier: float, max_grad_norm: float,
                 poisson_sampling: bool = True, noise_generator=None):
    """``PrivacyEngine.make_private`` with book-keeping clipping: returns ``(module, optimizer,
    criterion, data_loader)`` like Opacus' ghost mode, built from the same Opacus parts (Poisson
    ``DPDataLoader``, ``DPOptimizerFastGradientClipping``, the engine's accountant hook)."""
    from opacus.data_loader import DPDataLoader
    from opacus.optimizers import DPOptimizerFastGradientClipping

    privacy_engine.validate(module=module, optimizer=optimizer, data_loader=data_loader)
    engine = BookKeeping(module, max_grad_norm)
    if poisson_sampling:
        data_loader = DPDataLoader.from_data_loader(data_loader)
    sample_rate = 1 / len(data_loader)
    expected_batch_size = int(len(data_loader.dataset) * sample_rate)
    dp_optimizer = DPOptimizerFastGradientClipping(
        optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size, loss_reduction="mean", generator=noise_generator)
    dp_optimizer.attach_step_hook(
        privacy_engine.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    return (BookKeepingModule(module, engine), dp_optimizer, ClippedCriterion(engine, criterion),
            data_loader)
