"""pets_lite.dp: input checks, DP-readiness of models, accountants against dp-accounting, DP-SGD."""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pets_lite import dp, models
from pets_lite.recipes import RecipeError

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent



@pytest.fixture
def toy_data(toy_xrays):
    """This module's toy X-rays (the shared factory in conftest.py)."""
    return functools.partial(toy_xrays, kind="centre")


# ---------------------------------------------------------------- input checks

@pytest.mark.parametrize("eps", [0, -1.0, float("nan"), float("inf"), "8"])
def test_epsilon_must_be_positive_and_finite(eps):
    with pytest.raises(dp.DPConfigError, match="epsilon must be"):
        dp.check_budget(eps, 1e-5)


@pytest.mark.parametrize("delta", [0, 1, 1.5, -1e-5])
def test_delta_must_lie_in_open_unit_interval(delta):
    with pytest.raises(dp.DPConfigError, match="delta must lie strictly between 0 and 1"):
        dp.check_budget(1.0, delta)


def test_delta_above_one_over_n_warns_with_the_reason():
    with pytest.warns(UserWarning, match=r"larger than 1/N.*leaking a record"):
        dp.check_budget(1.0, 1e-2, n=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dp.check_budget(1.0, 1e-5, n=1000)  # below 1/N: silent


@pytest.mark.parametrize("clip", [0, -1.0, float("nan"), float("inf")])
def test_clip_norm_must_be_positive(clip):
    with pytest.raises(dp.DPConfigError, match="max_grad_norm"):
        dp.check_clip(clip)


def test_batchnorm_model_is_refused_with_what_to_do(toy_data):
    model = models.build_model("cnn", norm="batch", width=8, depth=2)
    assert dp.batchnorm_layers(model)
    with pytest.raises(dp.DPConfigError, match=r"BatchNorm.*norm='group'.*make_dp_ready"):
        dp.train_dp(model, toy_data(32), epsilon=8.0, epochs=1, batch_size=16)


def test_train_dp_rejects_bad_settings_before_training(toy_data):
    model = models.build_model("cnn", width=8, depth=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = toy_data(32)
    bad = [dict(), dict(epsilon=1.0, noise_multiplier=1.0), dict(epsilon=-1.0),
           dict(epsilon=1.0, max_grad_norm=0.0), dict(epsilon=1.0, batch_size=64),
           dict(epsilon=1.0, grad_sample_mode="magic"), dict(noise_multiplier=-1.0)]
    for kwargs in bad:
        with pytest.raises(dp.DPConfigError):
            dp.train_dp(model, data, epochs=1, **{"batch_size": 16, **kwargs})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing lost


# ---------------------------------------------------------------- models

def test_make_dp_ready_fixes_a_monai_resnet_and_it_trains(toy_data):
    net = models.build_model("monai_resnet", widths=(4, 4, 8, 8))
    assert dp.batchnorm_layers(net) and any(getattr(m, "inplace", False) for m in net.modules())
    with pytest.raises(dp.DPConfigError):
        dp.check_model(net)
    ready = dp.make_dp_ready(net)
    assert not dp.batchnorm_layers(ready)
    assert not any(getattr(m, "inplace", False) is True for m in ready.modules())
    assert dp.batchnorm_layers(net), "the original network must be left untouched"
    dp.check_model(ready)
    result = dp.train_dp(ready, toy_data(32), epsilon=8.0, epochs=1, batch_size=16, progress=False)
    assert result.grad_sample_mode == "bk"
    assert all(torch.isfinite(p).all() for p in ready.parameters())
    assert ready(torch.zeros(2, 1, 28, 28)).shape == (2, 2)


def test_grad_sample_mode_prefers_book_keeping_then_opacus_ghost_then_hooks():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x * self.scale)

    assert dp.grad_sample_mode_for(models.build_model("cnn", width=8, depth=2)) == "bk"
    # LayerNorm: Opacus has a per-sample rule, pets_lite.clipping has none.
    assert dp.grad_sample_mode_for(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))) == "ghost"
    assert dp.grad_sample_mode_for(Odd()) == "hooks"
    with pytest.raises(dp.DPConfigError,
                       match=r"grad_sample_mode='bk': no per-sample rule for <model> \(Odd\)"):
        dp.train_dp(Odd(), TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))),
                    epsilon=8.0, epochs=1, batch_size=4, grad_sample_mode="bk")


# ---------------------------------------------------------------- accounting

ANCHOR = dict(noise_multiplier=1.1, sample_rate=256 / 60000, steps=int(60 * 60000 / 256),
              delta=1e-5)


def test_anchor_matches_opacus_readme_history():
    report = dp.epsilon_report(**ANCHOR)
    assert 2.55 < report["rdp"] < 2.65          # today's RDP conversion
    assert 2.95 < dp.classic_rdp_epsilon(**ANCHOR) < 3.05  # 3.01 with Mironov's conversion
    assert report["prv"] < report["rdp"]        # PRV is tighter than the RDP upper bound
    assert abs(report["rdp"] - report["dp_accounting_rdp"]) < 1e-3
    assert abs(report["prv"] - report["dp_accounting_pld"]) / report["dp_accounting_pld"] < 0.02


@pytest.mark.parametrize("eps", [1.0, 8.0])
def test_recipe_accounting_cross_checks_against_dp_accounting(eps):
    """The full-mode recipe: 4,708 images, batch 256, 3 epochs."""
    q, steps = 1 / math.ceil(4708 / 256), dp.DP_RECIPE.epochs * math.ceil(4708 / 256)
    sigma = dp.noise_multiplier_for(eps, 1e-5, q, steps)
    report = dp.epsilon_report(sigma, q, steps, 1e-5)
    assert eps - 0.02 < report["rdp"] <= eps
    # Same integer orders: the two RDP implementations agree to 1e-3 (in fact to rounding).
    orders = list(range(2, 129))
    ours = dp.opacus_epsilon(sigma, q, steps, 1e-5, "rdp", orders=orders)
    theirs = dp.dp_accounting_epsilon(sigma, q, steps, 1e-5, "rdp", orders=orders)
    assert abs(ours - theirs) < 1e-3
    # Default (fractional) orders: dp-accounting drops the ones whose series does not converge.
    assert abs(report["rdp"] - report["dp_accounting_rdp"]) < 0.02
    assert abs(report["prv"] - report["dp_accounting_pld"]) / report["dp_accounting_pld"] < 0.02


def test_smaller_budget_needs_more_noise():
    sigmas = [dp.noise_multiplier_for(e, 1e-5, 0.05, 100) for e in (8.0, 2.0, 0.5)]
    assert sigmas[0] < sigmas[1] < sigmas[2]
    with pytest.raises(dp.DPConfigError):
        dp.noise_multiplier_for(1.0, 1e-5, 0.0, 100)
    with pytest.raises(ValueError, match="'rdp' or 'pld'"):
        dp.dp_accounting_epsilon(1.0, 0.01, 10, 1e-5, method="gdp")


# ---------------------------------------------------------------- DP-SGD

def test_per_sample_gradients_match_autograd_and_clipping_bounds_them(toy_data):
    torch.manual_seed(0)
    model = models.build_model("cnn", width=4, depth=2)
    data = toy_data(8)
    x, y = data.tensors
    g = dp.per_sample_grads(model, x, y)
    model.zero_grad()
    nn.functional.cross_entropy(model(x[3:4]), y[3:4]).backward()
    manual = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(g[3], manual, atol=1e-5)
    a = dp.dp_sgd_step_anatomy(model, x, y, max_grad_norm=0.01, noise_multiplier=1.0)
    assert np.all(a["norms_after"] <= 0.01 + 1e-5)
    assert a["clipped_fraction"] == 1.0 and a["n_params"] == g.shape[1]
    assert a["noise_norm"] == pytest.approx(0.01 * math.sqrt(g.shape[1]), rel=0.1)


def test_train_dp_meets_its_budget_learns_and_is_deterministic(toy_data):
    data, val = toy_data(128, seed=0), toy_data(64, seed=1)
    weights, results = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = models.build_model("cnn", width=8, depth=2)
        r = dp.train_dp(model, data, val, epsilon=8.0, epochs=3, batch_size=32, lr=1e-2,
                        seed=3, crosscheck=True, progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        results.append(r)
    r = results[0]
    assert r.grad_sample_mode == "bk" and r.steps == 3 * 4
    assert r.epsilon["rdp"] <= 8.0 + 1e-9 and r.epsilon["prv"] <= r.epsilon["rdp"]
    assert r.history.best_val_auc > 0.6
    assert torch.equal(weights[0], weights[1]), "same seed, same model"
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert dp.DPResult.from_dict(r.to_dict()).noise_multiplier == r.noise_multiplier


def test_dp_model_is_cached_and_keyed_by_epsilon(tmp_path, monkeypatch, data_available):
    monkeypatch.setenv("PETS_CACHE_DIR", str(tmp_path))
    kw = dict(seed=0, fast=True, progress=False, epochs=1, batch_size=300)
    m1, splits, r1 = dp.dp_model(8.0, **kw)
    m2, _, r2 = dp.dp_model(8.0, **kw)
    assert all(torch.equal(a, b)
               for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert r1.noise_multiplier == r2.noise_multiplier and len(splits["train"]) == 1200
    assert len(list((tmp_path / "models").glob("dp_cnn-*.pt"))) == 1
    with pytest.raises(RecipeError, match="no settings .'learning_rate'."):
        dp.dp_model(8.0, fast=True, learning_rate=1.0)


def test_benchmark_runs_and_reports_every_mode(data_available, capsys):
    spec = importlib.util.spec_from_file_location("dp_overhead",
                                                  ROOT / "benchmarks" / "dp_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    times = bench.main(["--n", "64", "--batch-size", "32", "--rounds", "1", "--width", "4"])
    assert set(times) == set(bench.MODES) and all(t[0] > 0 for t in times.values())
    assert "ghost" in capsys.readouterr().out


def test_train_dp_leaves_the_callers_generator_alone_and_draws_its_own_streams(toy_data):
    """No library call reseeds the global generator: the caller's stream goes on as if DP-SGD had
    not run; sampling and noise come from generators of their own (config.derive_seed)."""
    torch.manual_seed(123)
    model = models.build_model("cnn", width=4, depth=2)
    state = torch.get_rng_state()
    dp.train_dp(model, toy_data(32), epsilon=8.0, epochs=1, batch_size=8, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
