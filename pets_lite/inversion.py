"""Gradient inversion: rebuild a hospital's training images from the model update it sends.

The attack of Geiping et al. (NeurIPS 2020, "Inverting Gradients"): start from random dummy
images, run the same local computation the client ran, and move the dummy images (Adam) until the
update they produce points the same way as the observed one (cosine distance), with a total
variation prior that favours natural images. The label comes first, from the last layer's gradient
as in iDLG (Zhao et al. 2020): with cross-entropy and non-negative features, the weight row of the
true class is the only one with a negative gradient.

``steps > 1`` is the FedAvg case: the client ran several SGD steps, so the attacker unrolls the
same steps on the dummy data (differentiably) and matches the whole weight change.

Quality is measured with :mod:`pets_lite.metrics` (scikit-image's SSIM and PSNR) against the true
images, after pairing every true image with its best reconstruction (the attack cannot know the
batch order).

Chapter 04 runs the attack as :func:`attack` (one hospital's update) and :func:`aggregate_attack`
(the mean update SecAgg+ shows the server, against unrelated X-rays as the reference); the
hospitals' local step in its federation is :class:`ClientStep`, a local-update function for
:mod:`pets_lite.fl.secagg`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from . import config, metrics, train
from .fl import secagg

Update = list[torch.Tensor]


class InversionError(ValueError):
    """A gradient-inversion setting that cannot work (named, with what to do)."""


class InversionNet(nn.Sequential):
    """The small sigmoid networks of the gradient-leakage papers, for 28 x 28 images.

    ``kind="mlp"`` (default): flatten -> linear(hidden) -> sigmoid -> linear, the fully connected
    model of Phong et al. / DLG, whose first-layer gradient holds scaled copies of the image.
    ``kind="cnn"``: a sigmoid convolution (stride 2) before the linear layer; harder to invert.
    Sigmoid keeps features positive (what iDLG's label rule needs) and twice differentiable (what
    gradient matching needs).

    >>> InversionNet()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 2])
    """

    def __init__(self, kind: str = "mlp", in_channels: int = 1, n_classes: int = 2,
                 hidden: int = 32, image_size: int = 28):
        if min(in_channels, n_classes, hidden, image_size) < 1:
            raise InversionError("in_channels, n_classes, hidden and image_size must be >= 1")
        if kind == "mlp":
            layers = [nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden), nn.Sigmoid(),
                      nn.Linear(hidden, n_classes)]
        elif kind == "cnn":
            size = (image_size + 1) // 2
            layers = [nn.Conv2d(in_channels, 6, 5, stride=2, padding=2), nn.Sigmoid(), nn.Flatten(),
                      nn.Linear(6 * size * size, n_classes)]
        else:
            raise InversionError(f"unknown kind {kind!r}; choose 'mlp' or 'cnn'")
        super().__init__(*layers)
        self.kind, self.in_channels, self.image_size = kind, in_channels, image_size


def _check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.ndim != 4:
        raise InversionError("images must be a batch shaped (N, C, H, W), got "
                             f"{tuple(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise InversionError(f"labels must be 1-D with one label per image: {tuple(labels.shape)} "
                             f"labels for {len(images)} images")
    if len(images) == 0:
        raise InversionError("the batch is empty: pass at least one image")


def _unrolled_update(model: nn.Module, params: dict[str, torch.Tensor], images: torch.Tensor,
                     labels: torch.Tensor, steps: int, lr: float, create_graph: bool) -> Update:
    """(w0 - w_K) / lr after ``steps`` full-batch SGD steps; for one step, the gradient itself."""
    names = list(params)
    current = dict(params)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(functional_call(model, current, (images,)), labels)
        grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=create_graph)
        if steps == 1:  # exact gradient, no (w - (w - lr g)) / lr rounding
            return list(grads)
        current = {n: current[n] - lr * g for n, g in zip(names, grads)}
    return [(params[n] - current[n]) / lr for n in names]


def client_update(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 1,
                  lr: float = 0.1) -> Update:
    """What a client sends, as a gradient: (w0 - w_K) / lr after ``steps`` SGD steps on its
    batch."""
    _check_batch(images, labels)
    if steps < 1 or lr <= 0:
        raise InversionError(f"steps must be >= 1 and lr > 0, got steps={steps}, lr={lr}")
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    return [u.detach() for u in _unrolled_update(model, params, images, labels, steps, lr, False)]


def recover_label(update: Update) -> int:
    """iDLG: the class whose last-layer weight row has the most negative gradient (batch size 1)."""
    last = update[-2] if update[-1].ndim == 1 else update[-1]
    if last.ndim != 2:
        raise InversionError("the update's last weight must be a (classes x features) matrix: "
                             "use a model that ends in nn.Linear")
    return int(last.sum(dim=1).argmin())


def cosine_distance(a: Update, b: Update) -> torch.Tensor:
    """Mean over parameter tensors of 1 - cos(a_i, b_i).

    Geiping et al. take one cosine over all parameters; per tensor, every layer counts equally
    instead of the largest one drowning the first layers (which see the pixels), and small
    models are inverted far more faithfully.
    """
    terms = [1 - (x * y).sum() / (x.norm() * y.norm() + 1e-12) for x, y in zip(a, b)]
    return torch.stack(terms).mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (the image prior)."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


@dataclass
class Reconstruction:
    """An attack's output: images in [0, 1] and the labels it used, with its loss trace."""

    images: torch.Tensor
    labels: torch.Tensor
    losses: list[float] = field(default_factory=list)
    label_recovered: bool = False


def invert(model: nn.Module, update: Update, batch_size: int = 1, labels=None, steps: int = 1,
           lr: float = 0.1, iterations: int = 400, tv: float = 1e-2, step_size: float = 0.1,
           restarts: int = 1, seed: int = 0, image_shape: tuple[int, ...] = (1, 28, 28),
           progress: bool = False) -> Reconstruction:
    """Inverting Gradients: Adam on dummy images so their update matches ``update`` in cosine.

    ``labels=None`` recovers the label with iDLG (batch size 1 only; for larger batches pass the
    labels: the known-label setting, the attack's best case). ``steps``/``lr`` must describe the
    client's local computation. The best of ``restarts`` random starts (lowest loss) is returned.
    """
    params = {n: p.detach() for n, p in model.named_parameters()}
    if len(update) != len(params):
        raise InversionError(f"the update has {len(update)} tensors but the model has "
                             f"{len(params)} parameters: attack the model that produced it")
    for (n, p), u in zip(params.items(), update):
        if p.shape != u.shape:
            raise InversionError(f"update tensor for {n} has shape {tuple(u.shape)}, the model's "
                                 f"is {tuple(p.shape)}")
    if batch_size < 1 or iterations < 1 or restarts < 1 or steps < 1:
        raise InversionError("batch_size, iterations, restarts and steps must all be >= 1")
    recovered = labels is None
    if recovered:
        if batch_size != 1:
            raise InversionError("label recovery (iDLG) works for batch size 1; pass labels= "
                                 "for a larger batch")
        labels = torch.tensor([recover_label(update)])
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(labels) != batch_size:
        raise InversionError(f"{len(labels)} labels for batch_size={batch_size}")
    target = [u.detach() for u in update]
    gen = torch.Generator().manual_seed(seed)
    best: Reconstruction | None = None
    bar = config.progress(total=restarts * iterations, desc="inverting", disable=not progress)
    model.eval()
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    for _ in range(restarts):
        x = torch.rand(batch_size, *image_shape, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=step_size)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=[int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)
        losses = []
        for _ in range(iterations):
            opt.zero_grad()
            trial = _unrolled_update(model, leaves, x, labels, steps, lr, True)
            loss = cosine_distance(trial, target) + tv * total_variation(x)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            losses.append(float(loss.detach()))
            bar.update()
        final = float(cosine_distance(_trial_update(model, params, x.detach(), labels, steps, lr),
                                      target))
        if best is None or final < best.losses[-1]:
            best = Reconstruction(x.detach().clone(), labels.clone(), losses + [final], recovered)
    bar.close()
    return best


def _trial_update(model, params, x, labels, steps, lr) -> Update:
    """The update the attack's current dummy images produce (no graph kept)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    return [u.detach() for u in _unrolled_update(model, leaves, x, labels, steps, lr, False)]


# ---------------------------------------------------------------------------------------------
# The attack as chapter 04 runs it: on one update, and on aggregates of several hospitals
# ---------------------------------------------------------------------------------------------

@dataclass
class ClientStep:
    """Each hospital's local computation in a federation of the small inversion models, as a
    :data:`pets_lite.fl.secagg.LocalUpdate`: hospital k runs ``steps`` SGD steps of size ``lr``
    on its batch ``images[k]`` / ``labels[k]`` (shaped (clients, batch, C, H, W) / (clients,
    batch)) and returns its new parameters. Deterministic: the same inputs give the same update,
    so a test can recompute what each hospital sent."""

    images: torch.Tensor
    labels: torch.Tensor
    kind: str = "mlp"
    steps: int = 1
    lr: float = 0.1

    def __post_init__(self):
        if (self.images.ndim != 5 or self.labels.ndim != 2
                or self.images.shape[:2] != self.labels.shape):
            raise InversionError("images must be (clients, batch, C, H, W) with labels (clients, "
                                 f"batch); got {tuple(self.images.shape)} and "
                                 f"{tuple(self.labels.shape)}")

    def model(self, params: list[np.ndarray]) -> InversionNet:
        """The inversion network holding ``params``."""
        net = InversionNet(kind=self.kind, in_channels=self.images.shape[2],
                           image_size=self.images.shape[-1])
        secagg.load_parameters(net, params)
        return net

    def __call__(self, hospital: int, params: list[np.ndarray], server_round: int = 1
                 ) -> list[np.ndarray]:
        update = client_update(self.model(params), self.images[hospital], self.labels[hospital],
                               steps=self.steps, lr=self.lr)
        return [np.asarray(v) - self.lr * u.numpy() for v, u in zip(params, update)]


def attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 1,
           lr: float = 0.1, iterations: int = 400, seed: int = 0) -> tuple[Reconstruction, dict]:
    """One hospital's update on ``images``, then the attack on it: ``(reconstruction, scores)``,
    the scores of :func:`pets_lite.metrics.matched_scores`. One image: the label is recovered
    (iDLG); a batch: the labels are given (the attacker's best case)."""
    update = client_update(model, images, labels, steps=steps, lr=lr)
    rec = invert(model, update, len(images), labels=None if len(images) == 1 else labels,
                 steps=steps, lr=lr, iterations=iterations, seed=seed)
    return rec, metrics.matched_scores(images, rec.images)


def aggregate_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     n_hospitals: int, unrelated: list[torch.Tensor], iterations: int = 400,
                     seed: int = 0, steps: int = 1, lr: float = 0.1) -> dict:
    """The attack on what SecAgg+ shows the server: the mean update of ``n_hospitals``
    hospitals, hospital k holding the k-th equal share of ``images``.

    With one image per hospital the attacker inverts one image (label by iDLG) and keeps its
    best match among the hospitals' images; with several it inverts a batch of all of them with
    the labels given, paired by :func:`pets_lite.metrics.matched_scores`. The reference is the
    same score against each set of ``unrelated`` X-rays (as many images, none in the aggregate):
    an ``advantage`` near 0 means the reconstruction tells the server no more about these
    patients than about strangers. Returns ``{"hospitals", "images", "ssim", "unrelated_ssim",
    "advantage", "reconstruction", "matched"}`` (``matched``: the hospital image each
    reconstruction was paired with).
    """
    _check_batch(images, labels)
    n = len(images)
    if n_hospitals < 1 or n % n_hospitals:
        raise InversionError(f"{n} images cannot be shared equally by {n_hospitals} hospitals")
    if not unrelated:
        raise InversionError("give at least one set of unrelated X-rays as the reference")
    for ref in unrelated:
        if len(ref) != n:
            raise InversionError(f"each unrelated set must hold {n} images, got {len(ref)}")
        if any(torch.equal(a, b) for a in ref for b in images):
            raise InversionError("an 'unrelated' X-ray is one of the hospitals' images: take the "
                                 "reference from images outside the aggregate")
    per = n // n_hospitals
    shares = [slice(k * per, (k + 1) * per) for k in range(n_hospitals)]
    aggregate = train.weighted_average([client_update(model, images[s], labels[s], steps=steps,
                                                      lr=lr) for s in shares])
    if per == 1:
        rec = invert(model, aggregate, 1, steps=steps, lr=lr, iterations=iterations, seed=seed)
        hit = metrics.best_match(rec.images, images)
        own, matched = hit["ssim"], hit["index"]
        refs = [metrics.best_match(rec.images, ref)["ssim"] for ref in unrelated]
    else:
        rec = invert(model, aggregate, n, labels=labels, steps=steps, lr=lr,
                     iterations=iterations, seed=seed)
        scores = metrics.matched_scores(images, rec.images)
        own, matched = scores["ssim"], scores["order"]
        refs = [metrics.matched_scores(ref, rec.images)["ssim"] for ref in unrelated]
    reference = float(np.mean(refs))
    return {"hospitals": n_hospitals, "images": n, "ssim": float(own),
            "unrelated_ssim": reference, "advantage": float(own) - reference,
            "reconstruction": rec.images, "matched": matched}
