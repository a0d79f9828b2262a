"""The network CKKS evaluates: patch convolution, x^2, dense, x^2, dense; its plaintext training;
and the depth check against a parameter set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import models, train
from ..recipes import Recipe, cached_model
from .params import CKKSParams, DepthError


class HEConvNet(nn.Module):
    """Patch convolution (kernel = stride = ``patch``) -> x^2 -> linear -> x^2 -> linear.

    The TenSEAL tutorial's architecture (one convolution that the im2col encoding can evaluate,
    square activations, two dense layers) with non-overlapping patches, so that im2col is a
    permutation of the pixels and the batched path encrypts every pixel exactly once.

    >>> HEConvNet(channels=2, hidden=4)(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 2])
    """

    #: Multiplicative levels each packing consumes (TenSEAL's pack_vectors masks: one more).
    DEPTH = {"batched": 5, "tutorial": 6}

    def __init__(self, channels: int = 8, hidden: int = 32, patch: int = 4, image_size: int = 28,
                 n_classes: int = 2):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch {patch} must divide image_size {image_size}")
        self.patch, self.image_size = patch, image_size
        self.channels, self.hidden = channels, hidden
        self.grid = image_size // patch
        self.conv = nn.Conv2d(1, channels, patch, stride=patch)
        self.act1 = models.Square()
        self.fc1 = nn.Linear(channels * self.grid**2, hidden)
        self.act2 = models.Square()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, self.image_size, self.image_size):
            raise ValueError(f"expected (N, 1, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        h = self.act1(self.conv(x)).flatten(1)
        return self.fc2(self.act2(self.fc1(h)))

    @torch.no_grad()
    def intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's output in plaintext (to check the values fit the encoding's headroom)."""
        conv = self.conv(x)
        fc1 = self.fc1((conv**2).flatten(1))
        return {"conv": conv, "fc1": fc1, "logits": self.fc2(fc1**2)}


@dataclass(frozen=True)
class HERecipe(Recipe):
    """The x^2 model's plaintext training: :class:`HEConvNet` sizes, AdamW, best validation epoch.

    The learning rate (3e-3 against 1e-3) and the 30 full-mode epochs were chosen on the validation
    split (``benchmarks/recipe_search.py he``)."""

    channels: int = 8
    hidden: int = 32
    patch: int = 4
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64

    FAST = {"epochs": 10}

    def problems(self) -> list[str]:
        return super().problems() + self.only_at_28() + self.positive(
            "channels", "hidden", "patch", "epochs", "lr", "batch_size")


#: The recipe of chapter 05's x^2 model (full mode).
HE_RECIPE = HERecipe()


def he_model(flag: str | None = None, seed: int | None = None, fast: bool | None = None,
             refresh: bool = False, progress: bool = True, recipe: HERecipe = HE_RECIPE,
             **changes):
    """The x^2 model trained in plaintext, cached like the baseline: ``(model, splits, hist)``.

    ``flag``, ``seed`` and ``changes`` replace the recipe's fields; ``fast=None`` follows
    ``PETS_FAST``. Square activations can blow up early in training; small inputs in [0, 1],
    PyTorch's default initialisation, AdamW and best-validation selection kept it stable here.
    """
    from .. import data

    given = {k: v for k, v in (("flag", flag), ("seed", seed)) if v is not None}
    recipe = recipe.variant(fast).replace(**given, **changes)
    meta = data.info(recipe.flag)
    splits = data.load_splits(recipe.flag, fast=recipe.fast, seed=recipe.seed)

    def build():
        return HEConvNet(channels=recipe.channels, hidden=recipe.hidden, patch=recipe.patch,
                         n_classes=meta.n_classes)

    def train_fn(model):
        history = train.fit(model, splits["train"], splits["val"], epochs=recipe.epochs,
                            lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed,
                            progress=progress, desc=f"x^2 model {recipe.flag}")
        return {"history": vars(history)}

    model, results, _ = cached_model("he_convnet", recipe, build, train_fn, refresh=refresh)
    model.eval()
    return model, splits, train.History(**results["history"])


def check_depth(model: HEConvNet, params: CKKSParams, packing: str) -> None:
    """Raise :class:`DepthError` when ``params`` cannot hold ``model``'s multiplications."""
    need = HEConvNet.DEPTH[packing]
    if params.depth < need:
        raise DepthError(
            f"the {packing} path needs {need} multiplicative levels (conv, x^2, fc1, x^2, fc2"
            f"{', plus one for the channel packing' if packing == 'tutorial' else ''}), but the "
            f"parameters {list(params.coeff_mod_bit_sizes)} give {params.depth}: add "
            f"{need - params.depth} prime(s) of {params.scale_bits} bits (the total must stay "
            f"<= {params.max_bits_128} bits at N={params.poly_modulus_degree}) or double N")

