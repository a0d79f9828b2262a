"""pets_lite.dp.checks: what the real DP-SGD step hands the optimiser, measured. The noise must
have std σC / (qN), the σ = 0 step must be the clipped mean of the per-sample gradients, and the
batches must be Poisson samples, for every clipping engine; a sabotaged step fails here."""

from __future__ import annotations

import pytest
import torch

from pets_lite import dp, models


@pytest.fixture(scope="module")
def setting():
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 28, 28, generator=g)
    y = torch.randint(0, 2, (200,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = models.build_model("cnn", width=8, depth=2)
    return model, TensorDataset(x, y)


@pytest.mark.parametrize("mode", ["bk", "ghost", "hooks"])
def test_noise_reaching_the_optimiser_has_the_accountants_std(setting, mode):
    model, data = setting
    x, y = data[:24]
    before = [p.detach().clone() for p in model.parameters()]
    r = dp.noise_check(model, data, x, y, noise_multiplier=1.3, max_grad_norm=0.5, batch_size=20,
                       grad_sample_mode=mode, seed=1)
    assert r["mode"] == mode and r["qN"] == pytest.approx(20.0)
    # std sigma C / (qN) on the averaged gradient, to the precision of ~2,000 draws
    assert 0.95 < r["std_ratio"] < 1.05, r
    assert r["effective_sigma"] == pytest.approx(1.3, rel=0.05)
    assert abs(r["noise_mean"]) < 0.1 and r["ks_pvalue"] > 1e-3
    # the noiseless step is the clipped mean computed independently (torch.func)
    assert r["clip_error"] < 1e-4, r
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "model untouched"


def test_the_clipping_check_sees_clipping(setting):
    """A clipping norm that clips every example, and one that clips none: the check compares the
    optimiser's step with the clipped mean either way."""
    model, data = setting
    x, y = data[:16]
    tight = dp.noise_check(model, data, x, y, noise_multiplier=0.0, max_grad_norm=1e-4,
                           batch_size=20)
    loose = dp.noise_check(model, data, x, y, noise_multiplier=0.0, max_grad_norm=1e4,
                           batch_size=20)
    assert tight["clipped_fraction"] == 1.0 and loose["clipped_fraction"] == 0.0
    assert tight["clip_error"] < 1e-4 and loose["clip_error"] < 1e-4
    assert "std_ratio" not in tight  # no noise asked for: nothing to compare


@pytest.mark.parametrize("mode", ["bk", "hooks"])
def test_batches_are_poisson_samples(setting, mode):
    model, data = setting
    r = dp.sampling_check(model, data, batch_size=20, epochs=30, grad_sample_mode=mode, seed=2)
    assert r["steps"] == 300 and r["sample_rate"] == pytest.approx(0.1)
    assert r["mean_batch"] == pytest.approx(20.0, rel=0.05)
    # binomial batch sizes, and each example drawn Binomial(steps, q) times: a shuffled loader
    # (constant batches, every example once an epoch) gives ratios near 0
    assert 0.7 < r["batch_var_ratio"] < 1.4, r
    assert 0.7 < r["count_var_ratio"] < 1.4, r


def test_sampling_rate_and_steps_match_opacus():
    assert dp.sampling(4708, 256, 20) == (1 / 19, 380)
    with pytest.raises(dp.DPConfigError, match="batch_size"):
        dp.sampling(10, 20)


def test_advantage_bound():
    assert dp.advantage_bound(0.0, 0.0) == 0.0
    assert dp.advantage_bound(float("inf")) == 1.0
    assert dp.advantage_bound(1.0, 1e-5) == pytest.approx((2.718281828 - 1 + 2e-5) / 3.718281828)
    assert dp.advantage_bound(8.0) > 0.999  # epsilon = 8: vacuous
    with pytest.raises(dp.DPConfigError):
        dp.advantage_bound(-1.0)
