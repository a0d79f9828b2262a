"""One way to configure a trained model: frozen recipes, and the model cache keyed by them.

A :class:`Recipe` is a frozen dataclass holding every setting that decides a model's weights: the
data set (``flag``), the ``seed``, the mode (``fast``) and the subclass's hyperparameters. Its field
defaults are the full-mode recipe that the book publishes; the class constant ``FAST`` names the
fields that fast mode changes, and :meth:`Recipe.variant` gives either variant (``fast=None``
follows ``PETS_FAST``). :meth:`Recipe.replace` changes fields and validates again.

:func:`cached_model` trains a model once per recipe and reuses it across chapters. Its key is the
*whole* recipe (every field, by construction), the official checksum of the recipe's data file and
:data:`CACHE_VERSION`, so no setting can be left out of a key by hand.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Toy(Recipe):
...     epochs: int = 10
...     FAST = {"epochs": 2}
>>> Toy().variant(fast=True).epochs, Toy().variant(fast=False).epochs
(2, 10)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from . import config

#: Bump when a change to training or models alters what a cached model would be.
CACHE_VERSION = 4


class RecipeError(ValueError):
    """A recipe setting that cannot work (named, with what to do)."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Base of every recipe: the data set, the seed and the mode (see the module docstring).

    Fields of a subclass are validated by the type of their default (an ``int`` field takes an
    int, a ``float`` field a finite number, a ``bool`` field a bool, a ``str`` field a string);
    :meth:`problems` adds the subclass's own rules.
    """

    flag: str = "pneumoniamnist"
    seed: int = 0
    fast: bool = False
    #: The image side of the data file (28, or MedMNIST+'s 64, 128, 224): see :meth:`at_size`.
    image_size: int = 28

    #: The fields fast mode changes, and their fast-mode values.
    FAST: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        problems = self._type_problems()
        if not problems:
            problems += self.problems()
        if problems:
            raise RecipeError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def _type_problems(self) -> list[str]:
        out = []
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if default is dataclasses.MISSING:
                continue
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                      and math.isfinite(value))
            elif isinstance(default, str):
                ok = isinstance(value, str)
            elif isinstance(default, tuple):
                ok = isinstance(value, tuple)
            else:
                ok = True
            if not ok:
                out.append(f"{f.name} must be a {type(default).__name__}, got {value!r}")
        unknown = set(self.FAST) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            out.append(f"FAST names fields the recipe does not have: {sorted(unknown)}")
        return out

    def problems(self) -> list[str]:
        """The subclass's own rules (ranges, combinations): a list of what is wrong."""
        from .catalog import IMAGE_SIZES

        out = []
        if self.seed < 0:
            out.append(f"seed must be >= 0, got {self.seed}")
        if self.image_size not in IMAGE_SIZES:
            out.append(f"image_size {self.image_size} has no official MedMNIST file; choose one "
                       f"of {IMAGE_SIZES}")
        return out

    def only_at_28(self) -> list[str]:
        """A problem for a recipe whose method runs only on 28 px images (a helper for
        :meth:`problems`)."""
        if self.image_size != 28:
            return [f"{type(self).__name__} runs on 28 x 28 images only, got image_size "
                    f"{self.image_size}"]
        return []

    def at_size(self, image_size: int):
        """This recipe for images of side ``image_size``: the model family adapts by one more
        convolution block (with its 2 x 2 pooling) per doubling of the side (28 -> 64 -> 128 ->
        224 add 1, 2, 3 blocks to a recipe's ``depth``), so the last feature map stays about 3 px
        before global pooling. Recipes without a ``depth`` change ``image_size`` only."""
        steps = {28: 0, 64: 1, 128: 2, 224: 3}
        if image_size not in steps:
            self.replace(image_size=image_size)  # the clear error of problems()
        changes: dict = {"image_size": image_size}
        if hasattr(self, "depth"):
            changes["depth"] = self.depth + steps[image_size] - steps[self.image_size]
        return self.replace(**changes)

    def positive(self, *names: str) -> list[str]:
        """Problems for the named fields that are not > 0 (a helper for :meth:`problems`)."""
        return [f"{n} must be > 0, got {getattr(self, n)!r}" for n in names
                if not getattr(self, n) > 0]

    def variant(self, fast: bool | None = None):
        """This recipe in fast mode (the ``FAST`` values) or in full mode (the class defaults of
        those fields); ``fast=None`` follows ``PETS_FAST``. Other fields are kept."""
        fast = config.is_fast() if fast is None else bool(fast)
        if fast == self.fast:
            return self
        if fast:
            return dataclasses.replace(self, fast=True, **dict(self.FAST))
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in self.FAST}
        return dataclasses.replace(self, fast=False, **defaults)

    def replace(self, **changes):
        """A copy with some fields changed (validated again); an unknown name is an error."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise RecipeError(f"{type(self).__name__} has no settings {unknown}; it has "
                              f"{sorted(names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain values."""
        return dataclasses.asdict(self)


def cache_key(name: str, recipe: Recipe, **extra) -> dict:
    """What identifies a cached model: its name, the recipe's class and every field, the official
    MD5 of the recipe's data file, :data:`CACHE_VERSION` and any ``extra`` key material."""
    from . import data

    if not isinstance(recipe, Recipe):
        raise RecipeError(f"the model cache is keyed by a Recipe, got {type(recipe).__name__}")
    blob = {"name": name, "recipe_type": type(recipe).__qualname__, "recipe": recipe.to_dict(),
            "data_md5": data.info(recipe.flag).md5_for(getattr(recipe, "image_size", 28)),
            "version": CACHE_VERSION, "extra": extra}
    return json.loads(json.dumps(blob, sort_keys=True, default=str))


def key_hash(key: dict) -> str:
    """A short stable hash of a cache key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cached_model(name: str, recipe: Recipe, build: Callable[[], torch.nn.Module],
                 train_fn: Callable[[torch.nn.Module], dict], refresh: bool = False, **extra):
    """Train a model once per recipe, reuse it across notebooks: ``(model, results, from_cache)``.

    ``build()`` makes the untrained model; it runs with torch's generator seeded by
    ``recipe.seed`` (:func:`pets_lite.config.seeded`), so a cache miss in any chapter starts from
    the same weights. ``train_fn(model)`` trains it in place and returns a JSON-able dict of
    results. Both are stored atomically under ``config.cache_dir()/models`` by :func:`cache_key`;
    a stored file whose key differs in any way is never used.
    """
    key = cache_key(name, recipe, **extra)
    stem = f"{name}-{key_hash(key)}"
    folder = config.cache_dir() / "models"
    weights, meta = folder / f"{stem}.pt", folder / f"{stem}.json"
    with config.seeded(recipe.seed):
        model = build()
    if weights.exists() and meta.exists() and not refresh:
        stored = json.loads(meta.read_text())
        if stored.get("key") == key:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            return model, stored["results"], True
    results = train_fn(model)
    folder.mkdir(parents=True, exist_ok=True)
    for path, write in ((weights, lambda p: torch.save(model.state_dict(), p)),
                        (meta, lambda p: p.write_text(json.dumps(
                            {"key": key, "results": results}, default=str, indent=1)))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        write(tmp)
        tmp.replace(path)
    return model, results, False
