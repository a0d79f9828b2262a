"""Split learning between a hospital and a server, every crossing tensor serialised and counted.

Vanilla split learning (Gupta and Raskar 2018; Vepakomma et al. 2018): the hospital runs the first
``cut`` blocks of a :class:`pets_lite.models.SmallCNN`, sends the cut-layer activations (and the
labels) to the server, which runs the rest, computes the loss, and sends back the gradient of the
loss with respect to those activations. U-shaped split learning keeps the head (and so the labels
and the loss) at the hospital: the server sends its last features back and receives their gradient.

The two parties are separate objects that only exchange tensors through a :class:`Channel`, which
serialises each message to bytes (NumPy ``.npy`` format, as Flower's ``ndarray_to_bytes`` does),
counts them, and hands the receiver a fresh tensor: the communication figures are measured, not
estimated. Two defences act on what the hospital sends: Gaussian noise on the activations, and the
NoPeek distance-correlation penalty (Vepakomma et al. 2020).

What the other party learns from the messages (the server's inversion of the activations, Li et
al.'s label leakage from the returned gradients) is measured in :mod:`pets_lite.split.leakage`.
The FedAvg that chapter 08 compares split learning with is :mod:`pets_lite.fl`'s.
"""

from __future__ import annotations

import copy
import io
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .. import config, metrics
from ..models import SmallCNN
from ..train import BestOnValidation, History, loader

VARIANTS = ("vanilla", "ushaped")
#: Message kinds that belong to training (the rest are inference traffic).
TRAIN_KINDS = ("activations", "labels", "gradients", "features", "feature_gradients")
#: ``(sender, kind)`` of the gradient that the party computing the loss (Li et al.'s "label
#: party") returns to the other party, per variant: what Li et al.'s attacker receives.
LEAKED_GRADIENT = {"vanilla": ("server", "gradients"), "ushaped": ("hospital", "feature_gradients")}


# --------------------------------------------------------------------------------------------- wire

def to_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor as ``.npy`` bytes (dtype and shape in the header), as Flower serialises arrays.

    >>> len(to_bytes(torch.zeros(10))) - len(to_bytes(torch.zeros(0)))
    40
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"to_bytes takes a torch.Tensor, got {type(tensor).__name__}")
    buffer = io.BytesIO()
    np.save(buffer, tensor.detach().cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


def from_bytes(blob: bytes) -> torch.Tensor:
    """The tensor that :func:`to_bytes` wrote (a fresh copy, no autograd history)."""
    try:
        array = np.load(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"message is not a serialised array ({len(blob)} bytes): {exc}") from exc
    return torch.from_numpy(np.array(array))


def state_bytes(module: nn.Module) -> int:
    """Bytes of a module's state serialised tensor by tensor (what one copy of a model weighs on
    the wire, in the format Flower's ``ArrayRecord`` uses)."""
    return sum(len(to_bytes(t)) for t in module.state_dict().values())


class Channel:
    """The message boundary between the parties: serialise, count, deserialise.

    ``send(sender, kind, tensor)`` returns what the receiver gets: a new tensor rebuilt from the
    bytes, so no autograd graph or shared memory crosses. ``bytes`` counts by ``(sender, kind)``.
    """

    def __init__(self):
        self.bytes: Counter = Counter()

    def send(self, sender: str, kind: str, tensor: torch.Tensor) -> torch.Tensor:
        blob = to_bytes(tensor)
        self.bytes[(sender, kind)] += len(blob)
        return from_bytes(blob)

    def total(self, kinds: tuple[str, ...] | None = None) -> int:
        """Bytes sent so far, of the given kinds (all kinds when ``None``)."""
        return sum(n for (_, kind), n in self.bytes.items() if kinds is None or kind in kinds)


# ------------------------------------------------------------------------------------ the layers

def block_starts(model: SmallCNN) -> list[int]:
    """Indices in ``model.features`` where each conv block starts."""
    if not isinstance(model, SmallCNN):
        raise TypeError(f"split learning here cuts a pets_lite SmallCNN, got "
                        f"{type(model).__name__}")
    return [i for i, layer in enumerate(model.features) if isinstance(layer, nn.Conv2d)]


def split_layers(model: SmallCNN, cut: int) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """Deep copies of ``(front, middle, head)``: the first ``cut`` blocks, the others, the head.

    >>> f, m, h = split_layers(SmallCNN(width=4, depth=3), 1); f(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 4, 14, 14])
    """
    starts = block_starts(model)
    if not isinstance(cut, int) or not 1 <= cut <= len(starts):
        raise ValueError(f"cut must be an int from 1 to the model's depth ({len(starts)}): the "
                         f"number of conv blocks the hospital keeps; got {cut!r}")
    end = starts[cut] if cut < len(starts) else len(model.features)
    layers = list(model.features)
    front = copy.deepcopy(nn.Sequential(*layers[:end]))
    middle = copy.deepcopy(nn.Sequential(*layers[end:]))
    return front, middle, copy.deepcopy(model.head)


def cut_shape(model: SmallCNN, cut: int) -> tuple[int, ...]:
    """Shape ``(C, H, W)`` of one image's activations at ``cut``."""
    front, _, _ = split_layers(model, cut)
    with torch.no_grad():
        x = torch.zeros(1, model.in_channels, model.image_size, model.image_size)
        return tuple(front.eval()(x).shape[1:])


# ----------------------------------------------------------------------------------- NoPeek

def distance_correlation(x: torch.Tensor, z: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Sample distance correlation (Szekely et al. 2007) between two batches, each row one example.

    1 when ``z`` is a scaled copy of ``x``, near 0 when independent; differentiable (NoPeek's loss).

    >>> g = torch.Generator().manual_seed(0); x = torch.randn(64, 5, generator=g)
    >>> round(float(distance_correlation(x, 3 * x)), 4)
    1.0
    >>> float(distance_correlation(x, torch.randn(64, 5, generator=g))) < 0.5
    True
    """
    if len(x) != len(z) or len(x) < 2:
        raise ValueError(f"need two batches of the same size >= 2, got {len(x)} and {len(z)}")

    def centred(a: torch.Tensor) -> torch.Tensor:
        a = a.reshape(len(a), -1)
        sq = (a * a).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2 * a @ a.T).clamp_min(0)
        off = 1.0 - torch.eye(len(a), dtype=a.dtype, device=a.device)
        d = torch.sqrt(d2 + eps) * off  # the diagonal is exactly 0 and passes no gradient
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x.float()), centred(z.float())
    dcov = (a * b).mean().clamp_min(0)
    dvar = ((a * a).mean() * (b * b).mean()).sqrt()
    return torch.sqrt(dcov / (dvar + eps))


# ---------------------------------------------------------------------------------- the parties

class _Party:
    """What both parties do with their layers: one AdamW over them, train/eval modes, steps."""

    def __init__(self, layers: list[nn.Module | None], lr: float, weight_decay: float):
        self._layers = [m for m in layers if m is not None]
        params = [p for m in self._layers for p in m.parameters() if p.requires_grad]
        self.optimizer = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
                          if params else None)

    def modules(self) -> list[nn.Module]:
        return list(self._layers)

    def _start(self, train: bool = True) -> None:
        for m in self._layers:
            m.train(train)
        if train and self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def _step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()


class Hospital(_Party):
    """The data owner: holds the images, the front layers and, U-shaped, the head and the labels.

    ``noise_std`` adds Gaussian noise to every activation it sends (training and inference), drawn
    from its own generator (``seed``'s "activation-noise" stream); ``nopeek`` weights the distance
    correlation between its images and its (noise-free) activations in its loss.
    """

    def __init__(self, front: nn.Module, head: nn.Module | None = None, lr: float = 2e-3,
                 weight_decay: float = 1e-4, noise_std: float = 0.0, nopeek: float = 0.0,
                 seed: int = 0):
        if noise_std < 0 or nopeek < 0:
            raise ValueError(f"noise_std and nopeek must be >= 0, got {noise_std} and {nopeek}")
        super().__init__([front, head], lr, weight_decay)
        self.front, self.head = front, head
        self.noise_std, self.nopeek = float(noise_std), float(nopeek)
        self.noise = torch.Generator().manual_seed(config.derive_seed(seed, "activation-noise"))
        self._x = self._acts = None

    def activations(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        """Run the front layers; return what goes on the wire (noised if asked, no graph)."""
        self._start(train)
        if train:
            self._x, self._acts = x, self.front(x)
            acts = self._acts.detach()
        else:
            with torch.no_grad():
                acts = self.front(x)
        if self.noise_std > 0:
            acts = acts + self.noise_std * torch.randn(acts.shape, generator=self.noise)
        return acts

    def head_step(self, features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """U-shaped: loss on the server's features; return their gradient and the loss."""
        if self.head is None:
            raise RuntimeError("this hospital holds no head: head_step is for U-shaped split "
                               "learning")
        features = features.requires_grad_(True)
        loss = nn.functional.cross_entropy(self.head(features), y)
        loss.backward()
        return features.grad, loss.item()

    def backward(self, grad: torch.Tensor) -> None:
        """Finish backpropagation from the gradient the server returned, then update."""
        if self._acts is None:
            raise RuntimeError("backward() before activations(): no forward pass to finish")
        surrogate = (self._acts * grad).sum()  # d surrogate / d acts = grad
        if self.nopeek > 0:
            surrogate = surrogate + self.nopeek * distance_correlation(self._x, self._acts)
        surrogate.backward()
        self._step()
        self._x = self._acts = None

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """U-shaped inference: the head on the server's features."""
        self.head.eval()
        return self.head(features)


class Server(_Party):
    """The computing party: holds the middle layers and, in vanilla split learning, the head."""

    def __init__(self, middle: nn.Module, head: nn.Module | None = None, lr: float = 2e-3,
                 weight_decay: float = 1e-4):
        super().__init__([middle, head], lr, weight_decay)
        self.middle, self.head = middle, head
        self._in = self._out = None

    def _forward(self, acts: torch.Tensor) -> torch.Tensor:
        out = self.middle(acts)
        return self.head(out) if self.head is not None else out

    def train_step(self, acts: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Vanilla: forward, loss with the received labels, backward, update; return the gradient
        of the loss with respect to ``acts``, and the loss."""
        self._start()
        acts = acts.requires_grad_(True)
        loss = nn.functional.cross_entropy(self._forward(acts), y)
        loss.backward()
        self._step()
        return acts.grad, loss.item()

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        """U-shaped: run the middle layers, keep the graph, return the features to send back."""
        self._start()
        self._in = acts.requires_grad_(True)
        self._out = self._forward(self._in)
        return self._out.detach()

    def backward(self, grad: torch.Tensor) -> torch.Tensor:
        """U-shaped: backpropagate the hospital's feature gradient, update; return the gradient
        with respect to the activations it received."""
        if self._out is None:
            raise RuntimeError("backward() before forward(): no forward pass to finish")
        self._out.backward(grad)
        self._step()
        grad_in, self._in, self._out = self._in.grad, None, None
        return grad_in

    @torch.no_grad()
    def infer(self, acts: torch.Tensor) -> torch.Tensor:
        self._start(train=False)
        return self._forward(acts)


# --------------------------------------------------------------------------------- the protocol

@dataclass
class SplitRun:
    """A split-learning run: the two parties, their channel, and what was measured."""

    variant: str
    cut: int
    hospital: Hospital
    server: Server
    channel: Channel
    template: SmallCNN
    history: History = field(default_factory=History)
    epoch_bytes: list[int] = field(default_factory=list)
    epoch_bytes_by_kind: list[dict[str, int]] = field(default_factory=list)

    @property
    def bytes_per_epoch(self) -> float:
        """Mean training bytes crossing the boundary per epoch (both directions)."""
        return float(np.mean(self.epoch_bytes)) if self.epoch_bytes else float("nan")

    def model(self) -> SmallCNN:
        """The whole network as the two parties hold it now (a copy, for comparison only)."""
        model = copy.deepcopy(self.template)
        model.features = copy.deepcopy(nn.Sequential(*self.hospital.front, *self.server.middle))
        model.head = copy.deepcopy(self.server.head if self.variant == "vanilla"
                                   else self.hospital.head)
        return model


def make_parties(template: SmallCNN, cut: int, variant: str = "vanilla", lr: float = 2e-3,
                 weight_decay: float = 1e-4, noise_std: float = 0.0, nopeek: float = 0.0,
                 seed: int = 0) -> tuple[Hospital, Server]:
    """Cut ``template`` (copied, not changed) and hand the pieces to a hospital and a server."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    front, middle, head = split_layers(template, cut)
    if variant == "ushaped" and len(middle) == 0:
        raise ValueError(f"U-shaped split learning needs the server to hold a block: cut={cut} "
                         f"leaves it none; choose cut < {len(block_starts(template))}")
    kw = {"lr": lr, "weight_decay": weight_decay}
    hospital_head, server_head = (None, head) if variant == "vanilla" else (head, None)
    return (Hospital(front, hospital_head, noise_std=noise_std, nopeek=nopeek, seed=seed, **kw),
            Server(middle, server_head, **kw))


def train_step(hospital: Hospital, server: Server, channel: Channel, x: torch.Tensor,
               y: torch.Tensor, variant: str, on_gradient=None) -> float:
    """One batch of split learning; every tensor between the parties goes through ``channel``.

    ``on_gradient(grad, y)``, when given, is called with the gradient the label party returns
    (:data:`LEAKED_GRADIENT`) as its receiver gets it, and the batch's true labels (to score an
    attack with, e.g. :class:`pets_lite.split.leakage.GradientLog`).
    """
    sent = channel.send("hospital", "activations", hospital.activations(x, train=True))
    if variant == "vanilla":
        labels = channel.send("hospital", "labels", y)
        grad, loss = server.train_step(sent, labels)
        returned = leaked = channel.send("server", "gradients", grad)
    else:
        features = channel.send("server", "features", server.forward(sent))
        feature_grad, loss = hospital.head_step(features, y)
        leaked = channel.send("hospital", "feature_gradients", feature_grad)
        returned = channel.send("server", "gradients", server.backward(leaked))
    if on_gradient is not None:
        on_gradient(leaked, y)
    hospital.backward(returned)
    return loss


def evaluate_split(run: SplitRun, dataset: Dataset, batch_size: int = 512) -> dict[str, float]:
    """``{"auc", "acc"}`` of a split model, inferred across the boundary (noise included): the
    server returns logits (vanilla) or features for the hospital's head (U-shaped)."""
    probs, labels = [], []
    for x, y in loader(dataset, batch_size):
        sent = run.channel.send("hospital", "inference_activations",
                                run.hospital.activations(x, train=False))
        kind = "inference_logits" if run.variant == "vanilla" else "inference_features"
        out = run.channel.send("server", kind, run.server.infer(sent))
        logits = out if run.variant == "vanilla" else run.hospital.logits(out)
        probs.append(torch.softmax(logits, dim=1).numpy())
        labels.append(y.numpy())
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    return {"auc": metrics.auc_score(labels, probs), "acc": metrics.accuracy(labels, probs)}


def train_split(template: SmallCNN, train: Dataset, val: Dataset | None = None, cut: int = 1,
                variant: str = "vanilla", epochs: int = 3, lr: float = 2e-3, batch_size: int = 128,
                weight_decay: float = 1e-4, noise_std: float = 0.0, nopeek: float = 0.0,
                seed: int = 0, progress: bool = True, desc: str | None = None,
                on_gradient=None) -> SplitRun:
    """Train ``template``'s architecture (from its weights, copied) by split learning.

    Same recipe as :func:`pets_lite.train.fit` (AdamW, cross-entropy, seeded shuffling, the best
    validation-AUC epoch kept), so without noise or NoPeek it computes the same model as
    centralized training from the same initial weights, up to floating-point rounding.
    ``on_gradient`` goes to :func:`train_step`.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(train) == 0:
        raise ValueError("the training set is empty")
    hospital, server = make_parties(template, cut, variant, lr, weight_decay, noise_std, nopeek,
                                    seed)
    run = SplitRun(variant, cut, hospital, server, Channel(), copy.deepcopy(template))
    batches = loader(train, batch_size, shuffle=True, seed=seed)
    best = BestOnValidation(run.history, hospital.modules() + server.modules(),
                            (lambda: evaluate_split(run, val)) if val is not None else None)
    bar = config.progress(range(epochs), desc=desc or f"split {variant} cut={cut}",
                          disable=not progress)
    with config.seeded(seed):
        for epoch in bar:
            start, before = time.perf_counter(), Counter(run.channel.bytes)
            total, count = 0.0, 0
            for x, y in batches:
                total += train_step(hospital, server, run.channel, x, y, variant,
                                    on_gradient) * len(y)
                count += len(y)
            run.history.train_loss.append(total / count)
            run.history.epoch_seconds.append(time.perf_counter() - start)
            delta = {f"{s}->{k}": n - before.get((s, k), 0)
                     for (s, k), n in run.channel.bytes.items()
                     if k in TRAIN_KINDS and n - before.get((s, k), 0) > 0}
            run.epoch_bytes_by_kind.append(delta)
            run.epoch_bytes.append(sum(delta.values()))
            scores = best.update(epoch)
            bar.set_postfix(loss=f"{run.history.train_loss[-1]:.3f}",
                            **({"val_auc": f"{scores['auc']:.3f}"} if scores else {}))
    best.restore()
    return run


def max_weight_difference(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between two models' matching parameters."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        raise ValueError("the two models do not have the same parameters")
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def upload_bytes(dataset: TensorDataset) -> int:
    """Bytes to ship a dataset's images (as uint8, their stored form) and labels once, as
    centralization would."""
    x, y = dataset.tensors[:2]
    pixels = torch.round(x * 255).to(torch.uint8)
    return len(to_bytes(pixels)) + len(to_bytes(y))
