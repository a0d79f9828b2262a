"""pets_lite.clipping: book-keeping clipping equals clipping torch.func's per-sample gradients, on
every path (kept, instantiated in chunks, ghost norm), and DP-SGD with it equals Opacus' engines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from pets_lite import clipping, dp, models


def reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float):
    """Per-sample norms and the clipped sum from torch.func, Opacus' clipping factor."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def loss_fn(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),), strict=False)
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)
    norms = torch.cat([g.flatten(1) for g in per_sample.values()], 1).norm(dim=1)
    coef = (clip / (norms + 1e-6)).clamp(max=1.0)
    return norms, {k: torch.einsum("i,i...->...", coef, g) for k, g in per_sample.items()}


class Mixed(nn.Module):
    """A biased, strided, dilated convolution; GroupNorm; a Linear on (n, T, d); a Linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5, stride=2, padding=3, dilation=2, bias=True)
        self.norm = nn.GroupNorm(3, 6)
        self.token = nn.Linear(6, 5)
        self.head = nn.Linear(5 * 49, 2)

    def forward(self, x):
        h = F.relu(self.norm(self.conv(x)))                    # (n, 6, 13, 13)
        h = F.adaptive_avg_pool2d(h, 7).flatten(2).transpose(1, 2)  # (n, 49, 6)
        return self.head(self.token(h).flatten(1))


MODELS = {
    "small_cnn": lambda: models.build_model("cnn", width=8, depth=3),
    "monai_resnet": lambda: dp.make_dp_ready(models.build_model("monai_resnet",
                                                                widths=(4, 4, 8, 8))),
    "mixed": Mixed,
}


def batch(n: int = 13, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 2, (n,), generator=g)


def clipped(model: nn.Module, x, y, clip: float):
    engine = clipping.BookKeeping(model, clip)
    try:
        norms = engine.backward(F.cross_entropy(model(x), y, reduction="none"))
    finally:
        engine.remove_hooks()
    return norms, {k: p.grad for k, p in model.named_parameters() if p.requires_grad}


def assert_matches(model, x, y, clip):
    ref_norms, ref = reference(model, x, y, clip)
    norms, got = clipped(model, x, y, clip)
    assert torch.allclose(norms, ref_norms, rtol=1e-5, atol=1e-7)
    scale = max(v.abs().max() for v in ref.values())  # some gradients are ~0 (a bias before a norm)
    for k, v in ref.items():
        assert (got[k] - v).abs().max() <= 1e-5 * scale, k


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("clip", [1e-3, 1.0, 1e3])  # every example clipped / some / none
def test_matches_torch_func_per_sample_gradients(name, clip):
    torch.manual_seed(0)
    model = MODELS[name]().train()
    assert not clipping.unsupported_layers(model)
    assert_matches(model, *batch(), clip)


@pytest.mark.parametrize("name", ["mixed", "small_cnn"])
@pytest.mark.parametrize("path", ["kept", "chunked", "ghost", "unfold", "direct"])
def test_every_norm_path_is_exact(monkeypatch, name, path):
    """Kept per-example gradients, chunked instantiation (no room to keep them), the ghost norm
    (forced for every layer), and unfolded or grouped-convolution per-example gradients (each
    forced for every convolution) all give the same norms and sums."""
    if path in ("chunked", "ghost"):
        monkeypatch.setattr(clipping, "KEEP_BYTES", 0)
    if path == "ghost":
        monkeypatch.setattr(clipping, "_ghost_is_cheaper", lambda positions, d, p: True)
        monkeypatch.setattr(clipping, "DIRECT_MIN_POSITIONS", 10**9)
    if path == "unfold":
        monkeypatch.setattr(clipping, "DIRECT_MIN_POSITIONS", 10**9)
    if path == "direct":
        monkeypatch.setattr(clipping, "DIRECT_MIN_POSITIONS", 0)
        monkeypatch.setattr(clipping, "DIRECT_MIN_CHANNELS", 0)
    monkeypatch.setattr(clipping, "CHUNK_BYTES", 64 * 1024)  # several chunks per layer
    torch.manual_seed(1)
    assert_matches(MODELS[name]().train(), *batch(9, seed=1), 0.5)


def test_kept_buffers_follow_the_batch_size():
    """Poisson batches change size from step to step: a buffer kept from a smaller batch grows."""
    torch.manual_seed(0)
    model = models.build_model("cnn", width=8, depth=2).train()
    engine = clipping.BookKeeping(model, 0.5)
    for n in (3, 11, 5):
        x, y = batch(n, seed=n)
        ref_norms, ref = reference(model, x, y, 0.5)
        norms = engine.backward(F.cross_entropy(model(x), y, reduction="none"))
        assert torch.allclose(norms, ref_norms, rtol=1e-5)
        for k, p in model.named_parameters():
            assert torch.allclose(p.grad, ref[k], rtol=1e-4, atol=1e-6), (n, k)


def test_frozen_parameters_get_no_gradient_and_do_not_count():
    torch.manual_seed(0)
    model = models.build_model("cnn", width=8, depth=2).train()
    model.features[0].weight.requires_grad_(False)
    assert_matches(model, *batch(), 0.5)
    assert model.features[0].weight.grad is None


def test_each_example_contributes_at_most_the_clipping_norm():
    torch.manual_seed(0)
    model = models.build_model("cnn", width=8, depth=2).train()
    x, y = batch(1)
    norms, got = clipped(model, x, y, 0.01)
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in got.values()]))
    assert norms[0] > 0.01 and total == pytest.approx(0.01, rel=1e-4)


def test_an_empty_poisson_batch_gives_zero_gradients():
    model = models.build_model("cnn", width=8, depth=2).train()
    engine = clipping.BookKeeping(model, 1.0)
    x, y = batch(0)
    norms = engine.backward(F.cross_entropy(model(x), y, reduction="none"))
    assert norms.shape == (0,) and all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_refusals_say_what_to_do():
    with pytest.raises(ValueError,
                       match=r"no per-sample rule for 0 \(LayerNorm\).*'ghost' or 'hooks'"):
        clipping.BookKeeping(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)), 1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        clipping.BookKeeping(nn.Linear(4, 2), 0.0)

    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied weights across two layers: per-layer norms would not add up
    with pytest.raises(ValueError, match="share a parameter"):
        clipping.BookKeeping(nn.Sequential(a, nn.ReLU(), b), 1.0)
    assert dp.grad_sample_mode_for(nn.Sequential(a, nn.ReLU(), b)) != "bk"

    shared = nn.Linear(4, 4)
    engine = clipping.BookKeeping(nn.Sequential(shared, nn.ReLU(), shared), 1.0)
    with pytest.raises(RuntimeError, match="ran twice in one forward pass"):
        engine.model(torch.randn(3, 4))

    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    engine = clipping.BookKeeping(net, 1.0)
    losses = F.cross_entropy(net(torch.randn(3, 4)), torch.tensor([0, 1, 0]), reduction="none")
    with pytest.raises(RuntimeError, match="changed in place"):
        engine.backward(losses)
    with pytest.raises(ValueError, match=r"one loss per example"):
        engine.backward(losses.mean())

    net = nn.Linear(4, 2)
    engine = clipping.BookKeeping(net, 1.0)
    with torch.no_grad():
        out = net(torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="training mode"):
        engine.backward(F.cross_entropy(out.requires_grad_(), torch.tensor([0, 1, 0]),
                                        reduction="none"))
    engine.remove_hooks()
    net(torch.randn(2, 4))  # detached: the model runs as before
    assert not net._forward_hooks and not net._forward_pre_hooks


def test_dp_sgd_with_book_keeping_equals_opacus_ghost_and_hooks(toy_xrays):
    """Same seed, same Poisson batches, same noise: one backward pass reaches the weights that
    Opacus' two-pass ghost clipping and its per-sample hooks reach."""
    weights = {}
    for mode in ("bk", "ghost", "hooks"):
        torch.manual_seed(0)
        model = models.build_model("cnn", width=8, depth=2)
        start = torch.cat([p.detach().flatten() for p in model.parameters()])
        result = dp.train_dp(model, toy_xrays(128, 0, kind="centre"), None,
                             noise_multiplier=0.7, epochs=2,
                             batch_size=32, lr=1e-2, seed=3, progress=False, grad_sample_mode=mode)
        assert result.grad_sample_mode == mode and result.steps == 8
        weights[mode] = torch.cat([p.detach().flatten() for p in model.parameters()])
    scale = weights["bk"].abs().max()
    assert (weights["bk"] - weights["ghost"]).abs().max() < 1e-5 * scale
    assert (weights["bk"] - weights["hooks"]).abs().max() < 1e-5 * scale
    assert (weights["bk"] - start).abs().max() > 1e-3 * scale  # and training moved them


def test_clipped_gradient_matches_clipping_dp_per_sample_grads_and_leaves_grads_alone():
    torch.manual_seed(0)
    model = models.build_model("cnn", width=8, depth=2).eval()
    x, y = batch(7)
    g = dp.per_sample_grads(model, x, y)
    coef = (0.1 / (g.norm(dim=1) + 1e-6)).clamp(max=1.0)
    norms, flat = clipping.clipped_gradient(model, x, y, 0.1)
    assert torch.allclose(norms, g.norm(dim=1), rtol=1e-5)
    assert torch.allclose(flat, (coef[:, None] * g).sum(0), rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters()) and not model.training
