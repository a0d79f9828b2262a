"""pets_lite.he.noise: the noise a result shows the hospital depends on the server's weights (no
circuit privacy), what noise flooding costs, and the depth of an a x^2 + b x activation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("tenseal")

from pets_lite import he  # noqa: E402

SIZE, PATCH = 8, 4


def test_two_weightings_of_one_function_leave_different_noise():
    leak = he.weighting_leak(t=0.25, seed=0)
    assert leak["function_gap"] < 1e-4  # the same function...
    assert 0 < leak["noise"] < 1e-3
    assert leak["ratio"] > 2  # ... but the hospital tells the two servers apart by the noise
    torch.manual_seed(0)
    model = he.HEConvNet(channels=2, hidden=3, patch=PATCH, image_size=SIZE).eval()
    with pytest.raises(ValueError, match="t must be positive"):
        he.equivalent_weighting(model, 0)


def test_flooding_cost_adds_sigma_bits_to_every_prime():
    p = he.BATCHED_PARAMS
    full = he.flooding_cost(p, noise=2.0**-16, sigma=40)
    assert full["precision_bits"] == pytest.approx(16)
    assert full["extra_bits_per_prime"] == 40
    assert full["primes (bits)"] == [76, 69, 69, 69, 69, 69, 76]
    assert full["total_bits"] == 497 and full["seal_can_hold"] is False
    assert full["smallest_N"] == 32768 and full["fits_current_N"] is False
    assert full["extra_levels"] == pytest.approx(280 / 29)
    # keeping only 8 of the 16 bits after the point spends 8 of the 40 on precision
    light = he.flooding_cost(p, noise=2.0**-16, sigma=20, keep_bits=8)
    assert light["extra_bits_per_prime"] == 12 and light["seal_can_hold"] is True
    assert light["smallest_N"] == 16384
    assert he.flooding_cost(p, noise=2.0**-16, sigma=0)["added_bits"] == 0
    with pytest.raises(ValueError, match="noise must be positive"):
        he.flooding_cost(p, noise=0.0)


def test_a_x2_plus_b_x_costs_the_levels_of_x2_when_a_is_folded():
    levels = he.activation_levels(a=0.1, b=1.0)
    assert levels["x^2"] == 1 and levels["a x^2 + b x, a folded"] == 1
    assert levels["a x^2 + b x, naive"] == 2
    assert levels["error, folded"] < 1e-2 and levels["error, naive"] < 1e-2
    assert np.isfinite(levels["error, folded"])
