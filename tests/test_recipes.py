"""One recipe type and one model cache: every field of a recipe keys the cache."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from pets_lite import dp, he, recipes, smpc, train
from pets_lite.recipes import Recipe, RecipeError

ALL_RECIPES = [train.BASELINE, dp.DP_RECIPE, he.HE_RECIPE, smpc.MPC_RECIPE]


@dataclasses.dataclass(frozen=True)
class Toy(Recipe):
    epochs: int = 10
    lr: float = 0.1
    kind: str = "a"
    FAST = {"epochs": 2}

    def problems(self):
        return super().problems() + self.positive("epochs", "lr")


def small():
    return torch.nn.Linear(3, 2)


def test_variant_switches_only_the_fast_fields_and_back():
    fast = Toy(lr=0.5).variant(fast=True)
    assert (fast.fast, fast.epochs, fast.lr) == (True, 2, 0.5)
    full = fast.variant(fast=False)
    assert (full.fast, full.epochs, full.lr) == (False, 10, 0.5)
    assert Toy().variant(fast=False) is not None and Toy().variant(False) == Toy()


def test_variant_none_follows_pets_fast(monkeypatch):
    monkeypatch.setenv("PETS_FAST", "0")
    assert Toy().variant().epochs == 10
    monkeypatch.setenv("PETS_FAST", "1")
    assert Toy().variant().epochs == 2


def test_recipes_refuse_bad_values_with_the_field_named():
    with pytest.raises(RecipeError, match="epochs must be a int"):
        Toy(epochs=2.5)
    with pytest.raises(RecipeError, match="lr must be > 0"):
        Toy(lr=0.0)
    with pytest.raises(RecipeError, match="has no settings"):
        Toy().replace(epoch=3)
    with pytest.raises(RecipeError, match="flag"):
        Toy(flag=3)
    with pytest.raises(RecipeError):
        dp.DP_RECIPE.replace(delta=2.0)


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda r: type(r).__name__)
def test_every_field_of_every_recipe_enters_the_cache_key(recipe):
    """Change any one field: the key changes. (A key written by hand could leave one out.)"""
    base = recipes.key_hash(recipes.cache_key("m", recipe))
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if isinstance(value, bool):
            other = not value
        elif isinstance(value, (int, float)):
            other = value * 2 + 1
        elif f.name == "flag":
            other = "breastmnist"
        elif f.name == "grad_sample_mode":
            other = "hooks"
        elif isinstance(value, str):
            other = value + "x"
        else:
            continue
        try:
            changed = dataclasses.replace(recipe, **{f.name: other})
        except RecipeError:
            continue  # a value the recipe refuses cannot reach the cache
        assert recipes.key_hash(recipes.cache_key("m", changed)) != base, f.name
    assert recipes.cache_key("m", recipe) != recipes.cache_key("n", recipe)
    assert recipes.cache_key("m", recipe, index=1) != recipes.cache_key("m", recipe, index=2)


def test_the_key_holds_the_data_files_checksum_and_the_cache_version():
    key = recipes.cache_key("m", Toy())
    assert key["data_md5"] == "28209eda62fecd6e6a2d98b1501bb15f"
    assert key["version"] == recipes.CACHE_VERSION
    assert recipes.cache_key("m", Toy(flag="breastmnist"))["data_md5"] != key["data_md5"]


def test_model_cache_hits_invalidates_and_seeds_the_build(monkeypatch, tmp_path):
    monkeypatch.setenv("PETS_CACHE_DIR", str(tmp_path))
    calls = []

    def train_fn(model):
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return {"auc": 0.5 + len(calls)}

    m1, r1, hit1 = recipes.cached_model("toy", Toy(), small, train_fn)
    m2, r2, hit2 = recipes.cached_model("toy", Toy(), small, train_fn)
    assert (hit1, hit2) == (False, True) and len(calls) == 1 and r1 == r2
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(),
                                                 m2.state_dict().values()))
    _, r3, hit3 = recipes.cached_model("toy", Toy(lr=0.2), small, train_fn)
    assert not hit3 and len(calls) == 2 and r3["auc"] == 2.5
    _, _, hit4 = recipes.cached_model("toy", Toy(), small, train_fn, refresh=True)
    assert not hit4 and len(calls) == 3
    assert not list(tmp_path.rglob("*.tmp")), "no half-written cache files"
    stored = json.loads(next(tmp_path.rglob("toy-*.json")).read_text())
    assert stored["key"]["recipe"]["lr"] in (0.1, 0.2) and "results" in stored
    # build() runs under the recipe's seed: the same initial weights on every cache miss,
    # and the caller's generator is left as it was.
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _, _ = recipes.cached_model("fresh", Toy(seed=7), small, lambda m: {})
    assert torch.equal(torch.rand(1), expected_next)
    b, _, _ = recipes.cached_model("fresh2", Toy(seed=7), small, lambda m: {})
    assert torch.equal(a.weight, b.weight)


def test_a_stored_entry_with_another_key_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv("PETS_CACHE_DIR", str(tmp_path))
    recipes.cached_model("toy", Toy(), small, lambda m: {"run": 1})
    meta = next(tmp_path.rglob("toy-*.json"))
    stored = json.loads(meta.read_text())
    stored["key"]["recipe"]["lr"] = 99.0  # as if a hash collided or a file was copied in
    meta.write_text(json.dumps(stored))
    _, results, hit = recipes.cached_model("toy", Toy(), small, lambda m: {"run": 2})
    assert not hit and results == {"run": 2}
