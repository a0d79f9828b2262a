"""The companion's model family: a small CNN with knobs the PET chapters need, and MONAI networks.

* GroupNorm by default: per-sample normalisation, so DP-SGD's per-example gradients stay defined
  (BatchNorm mixes examples in a batch and Opacus refuses it).
* The activation is a knob: ``"square"`` (x ** 2) is the low-degree polynomial that homomorphic
  encryption can evaluate; ``"relu"`` is the plaintext default. No activation runs in place, since
  Opacus' hooks fail on in-place operations.
* Width and depth knobs keep models small enough for encrypted inference and 2-core training.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "gelu", "tanh", "elu", "square")


class Square(nn.Module):
    """x -> x ** 2: the polynomial activation of CryptoNets-style encrypted inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (never in place)."""
    table = {"relu": lambda: nn.ReLU(inplace=False), "gelu": nn.GELU, "tanh": nn.Tanh,
             "elu": lambda: nn.ELU(inplace=False), "square": Square}
    try:
        return table[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}") from None


def make_norm(kind: str, channels: int, groups: int = 8) -> nn.Module:
    """``"group"`` (DP-safe), ``"batch"`` (not DP-safe: for comparison only) or ``"none"``."""
    if kind == "group":
        g = groups
        while channels % g:  # the largest divisor of channels not above `groups`
            g -= 1
        return nn.GroupNorm(g, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose 'group', 'batch' or 'none'")


class SmallCNN(nn.Module):
    """``depth`` blocks of conv3x3 -> norm -> activation -> 2x2 pooling, then global average and a
    linear layer.

    Channels double each block from ``width``. ``pool="avg"`` keeps every operation linear or
    polynomial (what HE needs); ``"max"`` is the plaintext default.

    >>> m = SmallCNN(width=8, depth=2); m(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 2])
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, width: int = 32, depth: int = 3,
                 activation: str = "relu", norm: str = "group", pool: str = "max",
                 dropout: float = 0.0, image_size: int = 28):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.in_channels, self.image_size = in_channels, image_size
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for i in range(depth):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=(norm == "none")),
                       make_norm(norm, out), make_activation(activation)]
            if size >= 2:
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                size //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(dropout) if dropout else nn.Identity(),
                                  nn.Linear(channels, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a batch of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self.head(self.features(x))


def monai_resnet(in_channels: int = 1, n_classes: int = 2, widths=(16, 32, 64, 128)) -> nn.Module:
    """A small 2D MONAI ResNet (one basic block per stage) for 28 px inputs.

    It uses BatchNorm and in-place ReLUs, as MONAI builds it: :func:`pets_lite.dp` shows how to make
    it DP-ready (``ModuleValidator.fix`` and in-place activations off).
    """
    from monai.networks.nets import ResNet

    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=list(widths), spatial_dims=2,
                  n_input_channels=in_channels, num_classes=n_classes, conv1_t_size=3,
                  conv1_t_stride=1, no_max_pool=True)


def build_model(name: str = "cnn", **kwargs) -> nn.Module:
    """Factory: ``"cnn"`` (:class:`SmallCNN`), ``"he_cnn"`` (square activation, average pooling,
    no norm), or ``"monai_resnet"``; keyword arguments go to the constructor."""
    if name == "cnn":
        return SmallCNN(**kwargs)
    if name == "he_cnn":
        defaults = {"activation": "square", "pool": "avg", "norm": "none", "width": 8, "depth": 2}
        return SmallCNN(**{**defaults, **kwargs})
    if name == "monai_resnet":
        return monai_resnet(**kwargs)
    raise ValueError(f"unknown model {name!r}; choose 'cnn', 'he_cnn' or 'monai_resnet'")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
