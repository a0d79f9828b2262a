"""The run configuration of one federated experiment (a :class:`pets_lite.recipes.Recipe`).

It travels to the hospitals inside every message (:meth:`FLConfig.to_record`), so one
``ClientApp`` serves any number of experiments in a single simulation, and it is the Flower App's
run config (``pets_lite/fl/app/pyproject.toml`` lists every field, hyphenated).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

from .. import data
from ..recipes import Recipe, RecipeError

STRATEGIES = ("fedavg", "fedprox", "fedadam")


class FLConfigError(RecipeError):
    """A federated-learning setting that cannot work (named, with what to do)."""


@contextlib.contextmanager
def fl_errors():
    """Raise a recipe's refusal as :class:`FLConfigError` (what callers of this package catch)."""
    try:
        yield
    except FLConfigError:
        raise
    except RecipeError as exc:
        raise FLConfigError(str(exc)) from None


@dataclass(frozen=True)
class FLConfig(Recipe):
    """One federated experiment: data, partition, strategy and the local training recipe.

    Like every recipe, ``fast`` defaults to False (the full data set); ``variant(fast)`` or
    ``fast=`` chooses. Fast mode changes only the data (the seeded fast-mode subset): rounds and
    epochs are the chapter's parameters.
    """

    name: str = "fedavg"
    strategy: str = "fedavg"
    n_hospitals: int = 3
    scheme: str = "dirichlet"
    alpha: float = 0.5
    min_size: int = 10
    rounds: int = 3
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    proximal_mu: float = 0.0
    server_lr: float = 0.01
    width: int = 16
    depth: int = 3
    #: A hospital (partition id) whose ClientApp raises in training; -1: none.
    fail_hospital: int = -1
    #: The round it fails in; 0: every round.
    fail_round: int = 0
    client_eval: bool = True

    def __post_init__(self) -> None:
        with fl_errors():
            super().__post_init__()

    def replace(self, **changes) -> FLConfig:
        """A copy with some settings changed (validated again); an unknown name is an error."""
        with fl_errors():
            return super().replace(**changes)

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy {self.strategy!r} is not one of {STRATEGIES}")
        for name in ("n_hospitals", "rounds", "local_epochs", "batch_size", "width", "depth",
                     "min_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("lr", "server_lr"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if not self.proximal_mu >= 0:
            problems.append(f"proximal_mu must be >= 0, got {self.proximal_mu!r}")
        if self.strategy == "fedprox" and self.proximal_mu == 0:
            problems.append("fedprox needs proximal_mu > 0 (0 makes it FedAvg); try 0.01-1.0")
        if self.scheme not in data.PARTITION_SCHEMES:
            problems.append(f"scheme {self.scheme!r} is not one of {data.PARTITION_SCHEMES}")
        elif self.scheme != "iid" and not self.alpha > 0:
            problems.append(f"alpha must be > 0 for the {self.scheme!r} scheme, got {self.alpha!r}")
        if not -1 <= self.fail_hospital < max(self.n_hospitals, 1):
            problems.append("fail_hospital must be -1 (none) or a hospital index "
                            f"0..n_hospitals-1, got {self.fail_hospital!r}")
        if self.fail_round < 0:
            problems.append(f"fail_round must be 0 (every round) or a round number, got "
                            f"{self.fail_round!r}")
        return problems

    def to_record(self) -> dict:
        """The settings as a flat dict with Flower-style hyphenated keys (for a ConfigRecord)."""
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_record(cls, record) -> FLConfig:
        """Back from a ConfigRecord / run config; unknown keys (Flower's own) are ignored."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in dict(record).items():
            name = str(key).replace("-", "_")
            if name in defaults:
                kind = type(defaults[name])
                kwargs[name] = bool(value) if kind is bool else kind(value)
        return cls(**kwargs)

    @classmethod
    def field_names(cls) -> list[str]:
        """Every setting, as the Flower run config spells it (hyphenated)."""
        return [f.name.replace("_", "-") for f in dataclasses.fields(cls)]
