"""pets_lite.smpc: real two-party runs and their clean-up, the two scenarios, what a share holds
and where its randomness comes from (the CrypTen shim: tests/test_crypten_compat.py)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pets_lite import crypten_compat, smpc

ROOT = Path(__file__).resolve().parent.parent


# ----- real two-party runs

def _add_and_compare(rank, values):
    crypten = crypten_compat.crypten_module()
    n = len(values)
    x = crypten.cryptensor(torch.tensor(values) if rank == 0 else torch.zeros(n), src=0)
    y = crypten.cryptensor(torch.ones(n) if rank == 1 else torch.zeros(n), src=1)
    return {"pid": os.getpid(), "sum": (x + y).get_plain_text().tolist(),
            "gt": (x > y).get_plain_text().tolist(),
            "world": crypten.comm.get().get_world_size(),
            "rendezvous": os.environ["RENDEZVOUS"]}


@pytest.mark.parametrize("provider", ["TTP", "TFP"])
def test_two_real_processes_compute_on_shares(provider):
    out = smpc.run_parties(_add_and_compare, args=([0.5, 2.0, -3.0],), provider=provider)
    assert len(out) == 2
    assert len({o["pid"] for o in out} | {os.getpid()}) == 3  # two processes besides this one
    for o in out:
        assert o["world"] == 2
        assert o["rendezvous"].startswith("tcp://127.0.0.1:")
        assert np.allclose(o["sum"], [1.5, 3.0, -2.0], atol=1e-3)
        assert o["gt"] == [0.0, 1.0, 0.0]


def _fail_on_party_one(rank):
    if rank == 1:
        raise RuntimeError("hospital B crashed on purpose")
    crypten = crypten_compat.crypten_module()
    crypten.cryptensor(torch.ones(3), src=1)  # blocks: waits for the dead party
    return "unreachable"


def _children() -> set[int]:
    """PIDs of this process's live children."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def test_failing_party_is_reported_and_no_process_is_left(monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    before = _children()
    start = time.monotonic()
    try:
        with pytest.raises(smpc.PartyError, match="party 1 failed") as info:
            smpc.run_parties(_fail_on_party_one, timeout=60)
    finally:
        tempfile.tempdir = None
    assert "hospital B crashed on purpose" in str(info.value)  # the party's own traceback
    assert time.monotonic() - start < 30  # the blocked party was stopped, not waited for
    assert _children() - before == set()
    assert list(tmp_path.iterdir()) == []  # nothing written to the temporary folder


def _sleep(rank):
    time.sleep(30)


def test_timeout_stops_every_party():
    before = _children()
    with pytest.raises(smpc.PartyError, match="did not finish within"):
        smpc.run_parties(_sleep, provider="TFP", timeout=3)
    assert _children() - before == set()


@pytest.mark.parametrize("kwargs, match", [
    ({"world_size": 1}, "world_size must be an int >= 2"),
    ({"provider": "HE"}, "provider must be 'TTP'"),
    ({"timeout": 0}, "timeout must be positive"),
])
def test_run_parties_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        smpc.run_parties(_sleep, **kwargs)


def test_run_parties_needs_a_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        smpc.run_parties("not a function")


# ----- scenarios on tiny inputs

def _tiny_cnn():
    from pets_lite import models

    torch.manual_seed(0)
    model = models.SmallCNN(width=2, depth=1, norm="batch", pool="avg")
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding is really tested
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_fold_batchnorm_keeps_the_function():
    model = _tiny_cnn()
    folded = smpc.fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-5)


def test_private_inference_matches_plaintext_and_only_the_hospital_sees_it():
    model = _tiny_cnn()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = smpc.private_inference(model, x, batch_size=4, provider="TFP")
    plain, seconds = smpc.plaintext_inference(model, x)
    assert out["logits"].shape == (6, 2)
    assert np.abs(out["logits"] - plain).max() < 1e-2
    assert out["owner_saw_output"] is False
    assert out["rounds"] > 0 and out["bytes"] > 0 and seconds >= 0
    assert 0 < out["cpu_seconds"] <= out["seconds"] * 1.5


@pytest.mark.parametrize("images, match", [
    (torch.zeros(3, 28, 28), r"images must be a float tensor \(N, C, H, W\)"),
    (np.zeros((2, 1, 28, 28)), "images must be a float tensor"),
    (torch.zeros(0, 1, 28, 28), "images is empty"),
])
def test_private_inference_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        smpc.private_inference(_tiny_cnn(), images)


def _hospitals(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.3
    return smpc.split_hospitals(TensorDataset(x, y), fraction=0.4, seed=seed)


def test_private_training_step_matches_plaintext():
    a, b = _hospitals()
    assert len(a) + len(b) == 48 and len(a) == 19
    private = smpc.private_training(a, b, epochs=1, batch_size=24, lr=0.5, provider="TFP")
    plain = smpc.plaintext_training(a, b, epochs=1, batch_size=24, lr=0.5)
    assert private["steps"] == plain["steps"] == 2
    for p, q in zip(private["model"].parameters(), plain["model"].parameters()):
        assert torch.allclose(p, q, atol=2e-3), (p - q).abs().max()
    assert private["rounds"] > 0 and private["bytes"] > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs and batch_size must be >= 1"),
    ({"lr": -1.0}, "lr > 0"),
])
def test_training_rejects_bad_settings(kwargs, match):
    a, b = _hospitals()
    with pytest.raises(ValueError, match=match):
        smpc.plaintext_training(a, b, **kwargs)
    with pytest.raises(ValueError, match=match):
        smpc.private_training(a, b, **kwargs)


def test_training_rejects_mismatched_hospitals():
    a, _ = _hospitals()
    other = TensorDataset(torch.zeros(4, 1, 14, 14), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in shape"):
        smpc.plaintext_training(a, other)
    with pytest.raises(ValueError, match="hospital_b must be a non-empty TensorDataset"):
        smpc.plaintext_training(a, [1, 2, 3])


def test_split_hospitals_rejects_bad_fraction():
    a, _ = _hospitals()
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        smpc.split_hospitals(a, fraction=1.0)


def test_owner_share_is_the_zero_sharing_alone():
    # CrypTen's sharing sends nothing: party 0's share is the pseudo-random zero sharing, the same
    # for an X-ray and for a black image under the same generator seeds; the image lives in the
    # hospital's share only. (Statistics on party 0's share test torch's generator, not sharing.)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert smpc.zero_share_check(x, seed=7) == {"owner_share_identical": True,
                                                "hospital_share_is_image": True}
    a = smpc.share_images(x, seed=7)
    assert np.allclose(a["encoded"] / a["scale"], x.numpy(), atol=1e-4)
    fresh = smpc.share_images(x)  # CrypTen's own seeds (os.urandom): a new zero sharing each run
    assert not np.array_equal(fresh["share0"], a["share0"])


def test_the_image_dependent_share_looks_uniform_and_reconstructs():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    s = smpc.share_images(x)
    assert s["share1"].dtype == np.int64 and s["share1"].shape == (4, 1, 28, 28)
    assert np.allclose(s["encoded"] / s["scale"], x.numpy(), atol=1e-4)
    blank = smpc.share_images(torch.zeros_like(x))
    stats = smpc.share_statistics(s["share1"], x.numpy(), blank["share1"])
    assert min(stats["chi2_p"], stats["low_chi2_p"], stats["ks_p"], stats["two_sample_p"]) > 1e-4
    assert abs(stats["corr"]) < 0.1
    # the statistics can fail: the encoded image itself, and a mask of 40 random bits, are refuted
    bad = smpc.share_statistics(s["encoded"], x.numpy())
    assert bad["chi2_p"] < 1e-6 and bad["ks_p"] < 1e-6
    rng = np.random.default_rng(0)
    with np.errstate(over="ignore"):
        weak = s["encoded"] + rng.integers(0, 2**40, size=s["encoded"].shape, dtype=np.int64)
    assert smpc.share_statistics(weak, x.numpy())["chi2_p"] < 1e-6


def _dealer_seed(rank):
    from crypten.mpc.provider.ttp_provider import TTPClient

    return TTPClient.get().get_generator().initial_seed()


def test_dealer_seeds_are_fresh_and_not_the_callers():
    # A forked dealer would inherit the caller's torch generator: after torch.manual_seed(0) every
    # party could replay the seeds of all triples, and two runs would reuse the same triples.
    torch.manual_seed(0)
    first = smpc.run_parties(_dealer_seed, provider="TTP")
    second = smpc.run_parties(_dealer_seed, provider="TTP")
    torch.manual_seed(0)
    replayed = [torch.randint(-(2**63), 2**63 - 1, size=()).item() for _ in range(2)]
    assert first != second
    assert not set(first) & set(replayed) and not set(second) & set(replayed)


def test_torch_generator_uses_32_bits_of_its_seed():
    assert smpc.same_stream(123, 123 + 2**32) and smpc.same_stream(0, 2**40)
    assert not smpc.same_stream(123, 124)


def test_share_statistics_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in size"):
        smpc.share_statistics(np.zeros(5000, dtype=np.int64), np.zeros(10))
    with pytest.raises(ValueError, match="need at least"):
        smpc.share_statistics(np.zeros(10, dtype=np.int64), np.zeros(10))


def test_op_costs_rows():
    rows = smpc.op_costs(n=256, repeats=1, provider="TFP")
    names = [r["operation"] for r in rows]
    assert "ReLU" in names and "max pool 2x2" in names
    by = {r["operation"]: r for r in rows}
    assert by["add x + y"]["rounds"] == 0
    assert by["compare x > y"]["rounds"] > by["multiply x * y"]["rounds"] > 0
    with pytest.raises(ValueError, match="multiple of 64"):
        smpc.op_costs(n=100)
