"""pets_lite.split: the message boundary, exactness against centralized training, FedAvg, attack."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from pets_lite import metrics, split, train
from pets_lite.models import SmallCNN


@pytest.fixture
def toy_data(toy_xrays):
    """This module's toy X-rays (the shared factory in conftest.py)."""
    return functools.partial(toy_xrays, kind="square", balanced=True)


def test_wire_round_trip_and_counting():
    t = torch.randn(3, 4, 5)
    assert torch.equal(split.from_bytes(split.to_bytes(t)), t)
    ch = split.Channel()
    out = ch.send("hospital", "activations", t.requires_grad_(True) * 2)
    assert out.grad_fn is None and not out.requires_grad
    assert ch.bytes[("hospital", "activations")] == len(split.to_bytes(t)) and ch.total() > 240
    with pytest.raises(TypeError, match="torch.Tensor"):
        split.to_bytes(np.zeros(3))
    with pytest.raises(ValueError, match="not a serialised array"):
        split.from_bytes(b"garbage")


@pytest.mark.parametrize("variant,cut", [("vanilla", 1), ("vanilla", 2), ("ushaped", 1)])
def test_split_learning_equals_centralized_training(toy_data, variant, cut):
    torch.manual_seed(0)
    template = SmallCNN(width=4, depth=2)
    data = toy_data()
    central = copy.deepcopy(template)
    train.fit(central, data, data, epochs=2, lr=2e-3, batch_size=32, seed=0, progress=False)
    run = split.train_split(template, data, data, cut=cut, variant=variant, epochs=2, lr=2e-3,
                            batch_size=32, seed=0, progress=False)
    assert split.max_weight_difference(run.model(), central) < 1e-5
    # the template itself was not trained
    assert split.max_weight_difference(template, central) > 1e-3
    kinds = run.epoch_bytes_by_kind[0]
    assert ("hospital->labels" in kinds) == (variant == "vanilla")
    assert ("server->features" in kinds) == (variant == "ushaped")
    # activations and their gradients have the same size
    assert kinds["hospital->activations"] == kinds["server->gradients"]
    c, h, w = split.cut_shape(template, cut)
    assert kinds["hospital->activations"] > len(data) * c * h * w * 4


def test_noise_and_nopeek_change_training(toy_data):
    torch.manual_seed(0)
    template = SmallCNN(width=4, depth=2)
    data = toy_data()
    clean = split.train_split(template, data, None, epochs=1, batch_size=32, progress=False)
    noisy = split.train_split(template, data, None, epochs=1, batch_size=32, noise_std=0.5,
                              progress=False)
    nopeek = split.train_split(template, data, None, epochs=1, batch_size=32, nopeek=1.0,
                               progress=False)
    assert split.max_weight_difference(clean.model(), noisy.model()) > 1e-4
    assert split.max_weight_difference(clean.model(), nopeek.model()) > 1e-4
    metrics = split.evaluate_split(noisy, data)
    assert 0.0 <= metrics["auc"] <= 1.0


def test_bad_inputs_are_named(toy_data):
    m = SmallCNN(width=4, depth=2)
    with pytest.raises(ValueError, match="cut must be an int from 1 to the model's depth"):
        split.split_layers(m, 0)
    with pytest.raises(ValueError, match="cut must be"):
        split.split_layers(m, 3)
    with pytest.raises(TypeError, match="SmallCNN"):
        split.split_layers(torch.nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="U-shaped"):
        split.make_parties(m, 2, "ushaped")
    with pytest.raises(ValueError, match="variant must be"):
        split.make_parties(m, 1, "sideways")
    with pytest.raises(ValueError, match="noise_std and nopeek"):
        split.make_parties(m, 1, noise_std=-1)
    with pytest.raises(ValueError, match="epochs"):
        split.train_split(m, toy_data(8), epochs=0)
    with pytest.raises(ValueError, match="same size"):
        split.distance_correlation(torch.zeros(3, 2), torch.zeros(4, 2))
    hospital, _ = split.make_parties(m, 1)
    with pytest.raises(RuntimeError, match="before activations"):
        hospital.backward(torch.zeros(1))


def test_distance_correlation_gradient_is_finite():
    x = torch.rand(16, 1, 28, 28)
    z = (x.reshape(16, -1)[:, :10] * 2).requires_grad_(True)
    d = split.distance_correlation(x, z)
    d.backward()
    assert 0.9 < d.item() <= 1.0 + 1e-6 and torch.isfinite(z.grad).all()


def test_partition_and_fedavg(toy_data):
    data = toy_data(90)
    shards = split.partition_iid(data, 3, seed=0)
    assert sorted(len(s) for s in shards) == [30, 30, 30]
    assert all(int(s.tensors[1].sum()) == 15 for s in shards)
    with pytest.raises(ValueError, match="n_clients"):
        split.partition_iid(data, 0)
    torch.manual_seed(0)
    run = split.fedavg(SmallCNN(width=4, depth=2), shards, data, rounds=2, batch_size=32,
                       progress=False)
    assert len(run.history.val_auc) == 2
    assert run.model_bytes == split.state_bytes(run.model) > 4 * train_params(run.model)
    assert run.bytes_per_round == 2 * 3 * run.model_bytes
    with pytest.raises(ValueError, match="rounds"):
        split.fedavg(SmallCNN(width=4, depth=2), shards, None, rounds=0)


def train_params(model):
    return sum(p.numel() for p in model.state_dict().values())


def test_inversion_attack_beats_guessing_and_noise_hurts_it(toy_data):
    torch.manual_seed(0)
    m = SmallCNN(width=4, depth=2).eval()
    data = toy_data(160, seed=1).tensors[0]
    public, targets = data[:120], data[120:]
    clean, _ = split.make_parties(m, 1)
    noisy, _ = split.make_parties(m, 1, noise_std=3.0)
    a = split.inversion_attack(clean, public, targets)
    b = split.inversion_attack(noisy, public, targets)
    assert a["recons"].shape == targets.shape
    assert a["ssim"] > a["ssim_mean_image"] and a["ssim"] > b["ssim"]
    with pytest.raises(ValueError, match="as many activations"):
        split.RidgeInversion().fit(torch.zeros(4, 3), torch.zeros(5, 1, 2, 2))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.ssim_each(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8))


def test_upload_bytes_and_first_reaching(toy_data):
    data = toy_data(10)
    assert split.upload_bytes(data) >= 10 * 28 * 28 + 10 * 8
    assert split.first_reaching([0.1, 0.5], 0.5) == 2 and split.first_reaching([], 0.1) is None
