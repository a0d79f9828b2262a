"""Split learning between a hospital and a server, with every crossing tensor serialised and counted.

Vanilla split learning (Gupta and Raskar 2018; Vepakomma et al. 2018): the hospital runs the first
``cut`` blocks of a :class:`pets_lite.models.SmallCNN`, sends the cut-layer activations (and the
labels) to the server, which runs the rest, computes the loss, and sends back the gradient of the
loss with respect to those activations. U-shaped split learning keeps the head (and so the labels
and the loss) at the hospital: the server sends its last features back and receives their gradient.

The two parties are separate objects that only exchange tensors through a :class:`Channel`, which
serialises each message to bytes (NumPy ``.npy`` format, as Flower's ``ndarray_to_bytes`` does),
counts them, and hands the receiver a fresh tensor: the communication figures are measured, not
estimated.

The module also holds what the chapter measures against split learning: a minimal in-process FedAvg
loop (communication = serialised model state x 2 x clients x rounds; :mod:`pets_lite.fl` runs the
real Flower version), the server's inversion attack (a ridge decoder fitted on public images that
maps activations back to pixels, scored with SSIM), and two defences: Gaussian noise on the activations
and the NoPeek distance-correlation penalty (Vepakomma et al. 2020).
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

from . import config, metrics
from .models import SmallCNN
from .train import BestOnValidation, History, loader

VARIANTS = ("vanilla", "ushaped")
#: Message kinds that belong to training (the rest are inference traffic).
TRAIN_KINDS = ("activations", "labels", "gradients", "features", "feature_gradients")


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
    """Bytes of a module's state serialised tensor by tensor (what FedAvg ships per model copy)."""
    return sum(len(to_bytes(t)) for t in module.state_dict().values())


class Channel:
    """The message boundary between the parties: serialise, count, deserialise.

    ``send(sender, kind, tensor)`` returns what the receiver gets: a new tensor rebuilt from the
    bytes, so no autograd graph or shared memory crosses. ``bytes`` counts by ``(sender, kind)``.
    """

    def __init__(self):
        self.bytes: Counter = Counter()
        self.messages: Counter = Counter()

    def send(self, sender: str, kind: str, tensor: torch.Tensor) -> torch.Tensor:
        blob = to_bytes(tensor)
        self.bytes[(sender, kind)] += len(blob)
        self.messages[(sender, kind)] += 1
        return from_bytes(blob)

    def total(self, kinds: tuple[str, ...] | None = None) -> int:
        """Bytes sent so far, of the given kinds (all kinds when ``None``)."""
        return sum(n for (_, kind), n in self.bytes.items() if kinds is None or kind in kinds)

    def by_kind(self) -> dict[str, int]:
        """Bytes per message kind, as ``{"sender->kind": bytes}``."""
        return {f"{s}->{k}": n for (s, k), n in sorted(self.bytes.items())}


# ------------------------------------------------------------------------------------ the layers

def block_starts(model: SmallCNN) -> list[int]:
    """Indices in ``model.features`` where each conv block starts."""
    if not isinstance(model, SmallCNN):
        raise TypeError(f"split learning here cuts a pets_lite SmallCNN, got {type(model).__name__}")
    return [i for i, layer in enumerate(model.features) if isinstance(layer, nn.Conv2d)]


def split_layers(model: SmallCNN, cut: int) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """Deep copies of ``(front, middle, head)``: the first ``cut`` blocks, the other blocks, the head.

    >>> f, m, h = split_layers(SmallCNN(width=4, depth=3), 1); f(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 4, 14, 14])
    """
    starts = block_starts(model)
    if not isinstance(cut, int) or not 1 <= cut <= len(starts):
        raise ValueError(f"cut must be an int from 1 to the model's depth ({len(starts)}): the number "
                         f"of conv blocks the hospital keeps; got {cut!r}")
    end = starts[cut] if cut < len(starts) else len(model.features)
    layers = list(model.features)
    front = copy.deepcopy(nn.Sequential(*layers[:end]))
    middle = copy.deepcopy(nn.Sequential(*layers[end:]))
    return front, middle, copy.deepcopy(model.head)


def join_layers(template: SmallCNN, front: nn.Sequential, middle: nn.Sequential,
                head: nn.Sequential) -> SmallCNN:
    """A SmallCNN with ``template``'s shape holding the parties' current weights (for comparison)."""
    model = copy.deepcopy(template)
    model.features = copy.deepcopy(nn.Sequential(*list(front), *list(middle)))
    model.head = copy.deepcopy(head)
    return model


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

def _adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer | None:
    params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if params else None


class Hospital:
    """The data owner: holds the images, the front layers and, U-shaped, the head and the labels.

    ``noise_std`` adds Gaussian noise to every activation it sends (training and inference);
    ``nopeek`` weights the distance correlation between its images and its activations in its loss.
    """

    def __init__(self, front: nn.Module, head: nn.Module | None = None, lr: float = 2e-3,
                 weight_decay: float = 1e-4, noise_std: float = 0.0, nopeek: float = 0.0,
                 seed: int = 0):
        if noise_std < 0 or nopeek < 0:
            raise ValueError(f"noise_std and nopeek must be >= 0, got {noise_std} and {nopeek}")
        self.front, self.head = front, head
        self.noise_std, self.nopeek = float(noise_std), float(nopeek)
        params = list(front.parameters()) + (list(head.parameters()) if head is not None else [])
        self.optimizer = _adamw(params, lr, weight_decay)
        self.noise = torch.Generator().manual_seed(seed + 7919)
        self._x = self._acts = None

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.front, self.head) if m is not None]

    def activations(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        """Run the front layers; return what goes on the wire (noised if asked, no graph)."""
        for m in self.modules():
            m.train(train)
        if train:
            if self.optimizer is not None:
                self.optimizer.zero_grad(set_to_none=True)
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
            raise RuntimeError("this hospital holds no head: head_step is for U-shaped split learning")
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
        if self.optimizer is not None:
            self.optimizer.step()
        self._x = self._acts = None

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """U-shaped inference: the head on the server's features."""
        self.head.eval()
        return self.head(features)


class Server:
    """The computing party: holds the middle layers and, in vanilla split learning, the head."""

    def __init__(self, middle: nn.Module, head: nn.Module | None = None, lr: float = 2e-3,
                 weight_decay: float = 1e-4):
        self.middle, self.head = middle, head
        params = list(middle.parameters()) + (list(head.parameters()) if head is not None else [])
        self.optimizer = _adamw(params, lr, weight_decay)
        self._in = self._out = None

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.middle, self.head) if m is not None]

    def _forward(self, acts: torch.Tensor) -> torch.Tensor:
        out = self.middle(acts)
        return self.head(out) if self.head is not None else out

    def train_step(self, acts: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Vanilla: forward, loss with the received labels, backward, update; return d loss / d acts."""
        for m in self.modules():
            m.train()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        acts = acts.requires_grad_(True)
        loss = nn.functional.cross_entropy(self._forward(acts), y)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
        return acts.grad, loss.item()

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        """U-shaped: run the middle layers, keep the graph, return the features to send back."""
        for m in self.modules():
            m.train()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self._in = acts.requires_grad_(True)
        self._out = self._forward(self._in)
        return self._out.detach()

    def backward(self, grad: torch.Tensor) -> torch.Tensor:
        """U-shaped: backpropagate the hospital's feature gradient, update, return d loss / d acts."""
        if self._out is None:
            raise RuntimeError("backward() before forward(): no forward pass to finish")
        self._out.backward(grad)
        if self.optimizer is not None:
            self.optimizer.step()
        grad_in, self._in, self._out = self._in.grad, None, None
        return grad_in

    @torch.no_grad()
    def infer(self, acts: torch.Tensor) -> torch.Tensor:
        for m in self.modules():
            m.eval()
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
        """The whole network as the two parties hold it now (for comparison only)."""
        if self.variant == "vanilla":
            return join_layers(self.template, self.hospital.front, self.server.middle,
                               self.server.head)
        return join_layers(self.template, self.hospital.front, self.server.middle,
                           self.hospital.head)


def make_parties(template: SmallCNN, cut: int, variant: str = "vanilla", lr: float = 2e-3,
                 weight_decay: float = 1e-4, noise_std: float = 0.0, nopeek: float = 0.0,
                 seed: int = 0) -> tuple[Hospital, Server]:
    """Cut ``template`` (copied, not changed) and hand the pieces to a hospital and a server."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    front, middle, head = split_layers(template, cut)
    if variant == "ushaped" and len(middle) == 0:
        raise ValueError(f"U-shaped split learning needs the server to hold a block: cut={cut} leaves "
                         f"it none; choose cut < {len(block_starts(template))}")
    kw = {"lr": lr, "weight_decay": weight_decay}
    if variant == "vanilla":
        return (Hospital(front, None, noise_std=noise_std, nopeek=nopeek, seed=seed, **kw),
                Server(middle, head, **kw))
    return (Hospital(front, head, noise_std=noise_std, nopeek=nopeek, seed=seed, **kw),
            Server(middle, None, **kw))


def train_step(hospital: Hospital, server: Server, channel: Channel, x: torch.Tensor,
               y: torch.Tensor, variant: str) -> float:
    """One batch of split learning; every tensor between the parties goes through ``channel``."""
    sent = channel.send("hospital", "activations", hospital.activations(x, train=True))
    if variant == "vanilla":
        labels = channel.send("hospital", "labels", y)
        grad, loss = server.train_step(sent, labels)
    else:
        features = channel.send("server", "features", server.forward(sent))
        feature_grad, loss = hospital.head_step(features, y)
        grad = server.backward(channel.send("hospital", "feature_gradients", feature_grad))
    hospital.backward(channel.send("server", "gradients", grad))
    return loss


def predict_proba_split(hospital: Hospital, server: Server, channel: Channel, dataset: Dataset,
                        variant: str, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Inference across the boundary: ``(probabilities, labels)``; the server returns logits
    (vanilla) or features (U-shaped)."""
    probs, labels = [], []
    for x, y in loader(dataset, batch_size):
        sent = channel.send("hospital", "inference_activations", hospital.activations(x, train=False))
        if variant == "vanilla":
            logits = channel.send("server", "inference_logits", server.infer(sent))
        else:
            logits = hospital.logits(channel.send("server", "inference_features", server.infer(sent)))
        probs.append(torch.softmax(logits, dim=1))
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def evaluate_split(run: SplitRun, dataset: Dataset) -> dict[str, float]:
    """``{"auc", "acc"}`` of a split model, evaluated across the boundary (noise included)."""
    probs, labels = predict_proba_split(run.hospital, run.server, run.channel, dataset, run.variant)
    return {"auc": metrics.auc_score(labels, probs), "acc": metrics.accuracy(labels, probs)}


def train_split(template: SmallCNN, train: Dataset, val: Dataset | None = None, cut: int = 1,
                variant: str = "vanilla", epochs: int = 3, lr: float = 2e-3, batch_size: int = 128,
                weight_decay: float = 1e-4, noise_std: float = 0.0, nopeek: float = 0.0,
                seed: int = 0, progress: bool = True, desc: str | None = None) -> SplitRun:
    """Train ``template``'s architecture (from its weights, copied) by split learning.

    Same recipe as :func:`pets_lite.train.fit` (AdamW, cross-entropy, seeded shuffling, the best
    validation-AUC epoch kept), so without noise or NoPeek it computes the same model as centralized
    training from the same initial weights, up to floating-point rounding.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(train) == 0:
        raise ValueError("the training set is empty")
    hospital, server = make_parties(template, cut, variant, lr, weight_decay, noise_std, nopeek, seed)
    run = SplitRun(variant, cut, hospital, server, Channel(), copy.deepcopy(template))
    torch.manual_seed(seed)
    batches = loader(train, batch_size, shuffle=True, seed=seed)
    best = BestOnValidation(run.history, hospital.modules() + server.modules(),
                            (lambda: evaluate_split(run, val)) if val is not None else None)
    bar = config.progress(range(epochs), desc=desc or f"split {variant} cut={cut}",
                          disable=not progress)
    for epoch in bar:
        start, before = time.perf_counter(), Counter(run.channel.bytes)
        total, count = 0.0, 0
        for x, y in batches:
            total += train_step(hospital, server, run.channel, x, y, variant) * len(y)
            count += len(y)
        run.history.train_loss.append(total / count)
        run.history.epoch_seconds.append(time.perf_counter() - start)
        delta = {f"{s}->{k}": n - before.get((s, k), 0) for (s, k), n in run.channel.bytes.items()
                 if k in TRAIN_KINDS and n - before.get((s, k), 0) > 0}
        run.epoch_bytes_by_kind.append(delta)
        run.epoch_bytes.append(sum(delta.values()))
        metrics = best.update(epoch)
        if metrics:
            bar.set_postfix(loss=f"{run.history.train_loss[-1]:.3f}", val_auc=f"{metrics['auc']:.3f}")
    best.restore()
    return run


def max_weight_difference(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between two models' matching parameters."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        raise ValueError("the two models do not have the same parameters")
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def upload_bytes(dataset: TensorDataset) -> int:
    """Bytes to ship a dataset's images (as uint8, their stored form) and labels once: centralization."""
    x, y = dataset.tensors[:2]
    pixels = torch.round(x * 255).to(torch.uint8)
    return len(to_bytes(pixels)) + len(to_bytes(y))


# ------------------------------------------------------------------------------------- FedAvg

def partition_iid(dataset: TensorDataset, n_clients: int, seed: int = 0) -> list[TensorDataset]:
    """``n_clients`` disjoint shards, each with the class mix of the whole (seeded)."""
    x, y = dataset.tensors[:2]
    if not isinstance(n_clients, int) or not 1 <= n_clients <= len(y):
        raise ValueError(f"n_clients must be an int between 1 and {len(y)}, got {n_clients!r}")
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(n_clients)]
    offset = 0
    for c in np.unique(y.numpy()):
        idx = rng.permutation(np.flatnonzero(y.numpy() == c))
        for j, i in enumerate(idx):
            shards[(offset + j) % n_clients].append(int(i))
        offset += len(idx)
    return [TensorDataset(x[sorted(s)], y[sorted(s)]) for s in shards]


@dataclass
class FedAvgRun:
    """A FedAvg run: the global model, its validation AUC per round, the bytes per round."""

    model: nn.Module
    history: History
    model_bytes: int
    n_clients: int

    @property
    def bytes_per_round(self) -> int:
        """Download + upload of the model state for every client (measured serialised size)."""
        return 2 * self.n_clients * self.model_bytes


def fedavg(template: nn.Module, clients: list[Dataset], val: Dataset | None, rounds: int = 3,
           local_epochs: int = 1, lr: float = 2e-3, batch_size: int = 128,
           weight_decay: float = 1e-4, seed: int = 0, progress: bool = True) -> FedAvgRun:
    """Minimal in-process FedAvg (McMahan et al. 2017): local AdamW epochs, size-weighted average.

    A stand-in for :mod:`pets_lite.fl` (Flower) with the same communication pattern: each round the
    server sends the model state to every client and each returns its update.
    """
    if rounds < 1 or local_epochs < 1 or not clients:
        raise ValueError(f"need rounds >= 1, local_epochs >= 1 and at least one client; got "
                         f"rounds={rounds}, local_epochs={local_epochs}, {len(clients)} clients")
    from .train import evaluate

    glob = copy.deepcopy(template)
    sizes = np.array([len(c) for c in clients], dtype=float)
    history = History()
    best = BestOnValidation(history, [glob], (lambda: evaluate(glob, val)) if val is not None else None)
    bar = config.progress(range(rounds), desc=f"FedAvg {len(clients)} clients", disable=not progress)
    for rnd in bar:
        start = time.perf_counter()
        states, losses = [], []
        for k, data in enumerate(clients):
            local = copy.deepcopy(glob)
            local.train()
            opt = torch.optim.AdamW(local.parameters(), lr=lr, weight_decay=weight_decay)
            torch.manual_seed(seed + 1000 * rnd + k)
            for _ in range(local_epochs):
                for x, y in loader(data, batch_size, shuffle=True, seed=seed + 1000 * rnd + k):
                    opt.zero_grad(set_to_none=True)
                    loss = nn.functional.cross_entropy(local(x), y)
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
            states.append(local.state_dict())
        weights = sizes / sizes.sum()
        glob.load_state_dict({key: sum(w * s[key].float() for w, s in zip(weights, states))
                              .to(states[0][key].dtype) for key in states[0]})
        history.train_loss.append(float(np.mean(losses)))
        history.epoch_seconds.append(time.perf_counter() - start)
        metrics = best.update(rnd)
        if metrics:
            bar.set_postfix(val_auc=f"{metrics['auc']:.3f}")
    best.restore()
    return FedAvgRun(glob, history, state_bytes(glob), len(clients))


def first_reaching(values: list[float], target: float) -> int | None:
    """1-based index of the first value >= ``target``; ``None`` if none reaches it.

    >>> first_reaching([0.7, 0.9, 0.95], 0.9), first_reaching([0.5], 0.9)
    (2, None)
    """
    for i, v in enumerate(values):
        if v >= target:
            return i + 1
    return None


# ---------------------------------------------------------------------------- inversion attack

@torch.no_grad()
def query_activations(hospital: Hospital, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """What the hospital would send for ``images`` (its front layers, plus its noise if any)."""
    return torch.cat([hospital.activations(images[i:i + batch_size], train=False)
                      for i in range(0, len(images), batch_size)])


class RidgeInversion:
    """The server's inversion model: ridge regression from standardised activations to pixels.

    Closed form, so it trains in a second on two cores; the ridge strength is picked from
    ``alphas`` on a held-out fifth of the public pairs. A linear decoder is a lower bound on what a
    deep decoder (He et al. 2019) recovers.
    """

    def __init__(self, alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0), seed: int = 0):
        self.alphas, self.seed = alphas, seed

    def fit(self, acts: torch.Tensor, images: torch.Tensor) -> "RidgeInversion":
        from sklearn.linear_model import Ridge

        if len(acts) != len(images) or len(acts) < 5:
            raise ValueError(f"need as many activations as images, at least 5; got {len(acts)} and "
                             f"{len(images)}")
        a = acts.reshape(len(acts), -1).double().numpy()
        self.mean, self.std = a.mean(0), a.std(0) + 1e-6
        a = (a - self.mean) / self.std
        x = images.reshape(len(images), -1).double().numpy()
        self.shape = tuple(images.shape[1:])
        order = np.random.default_rng(self.seed).permutation(len(a))
        hold, fit = order[: len(a) // 5], order[len(a) // 5:]
        scale = a.shape[1] / 100.0  # the penalty grows with the number of features
        errors = [np.mean((Ridge(alpha=al * scale).fit(a[fit], x[fit]).predict(a[hold]) - x[hold]) ** 2)
                  for al in self.alphas]
        self.alpha = float(self.alphas[int(np.argmin(errors))])
        self.model = Ridge(alpha=self.alpha * scale).fit(a, x)
        return self

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        a = (acts.reshape(len(acts), -1).double().numpy() - self.mean) / self.std
        out = np.clip(self.model.predict(a), 0.0, 1.0)
        return torch.from_numpy(out).float().reshape(len(acts), *self.shape)


def inversion_attack(hospital: Hospital, public: torch.Tensor, targets: torch.Tensor,
                     seed: int = 0) -> dict:
    """The server's attack: learn to invert the hospital's activations on ``public`` images, then
    reconstruct ``targets`` from their activations. Returns SSIM/MSE and the reconstructions;
    ``ssim_mean_image`` is the SSIM of guessing the mean public image (learning nothing)."""
    decoder = RidgeInversion(seed=seed).fit(query_activations(hospital, public), public)
    recons = decoder(query_activations(hospital, targets))
    scores = metrics.ssim_each(targets, recons)
    mean_image = public.mean(0, keepdim=True).expand_as(targets)
    return {"ssim": float(scores.mean()), "ssim_per_image": scores,
            "mse": float(nn.functional.mse_loss(recons, targets)),
            "ssim_mean_image": float(metrics.ssim_each(targets, mean_image).mean()),
            "recons": recons, "decoder": decoder}
