"""The shared measures: AUC, accuracy, SSIM, PSNR and the matched scores of a batch attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pets_lite import metrics


def test_auc_binary_multiclass_degenerate_and_sign():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.auc_score(y, s) == pytest.approx(0.75)
    assert metrics.auc_score(y, -s) == pytest.approx(0.25)  # a flipped score is not "as good"
    assert metrics.auc_score(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])) == 1.0
    y3, p3 = np.array([0, 1, 2]), np.eye(3)
    assert metrics.auc_score(y3, p3) == 1.0
    assert np.isnan(metrics.auc_score(np.array([1, 1]), np.array([[0.1, 0.9], [0.3, 0.7]])))
    with pytest.raises(metrics.MetricError, match="labels"):
        metrics.auc_score(y, s[:3])


def test_accuracy():
    assert metrics.accuracy([0, 1], np.array([[0.9, 0.1], [0.6, 0.4]])) == 0.5
    with pytest.raises(metrics.MetricError):
        metrics.accuracy([0, 1], np.array([0.2, 0.3]))


def test_ssim_psnr_and_matching():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 28, 28, generator=g)
    b = torch.rand(1, 1, 28, 28, generator=g)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.ssim(a, b) < 0.2
    assert metrics.psnr(a, a) == np.inf and metrics.psnr(a, (a + 0.1).clamp(0, 1)) < 40
    s = metrics.matched_scores(torch.cat([a, b]), torch.cat([b, a]))
    assert s["order"] == [1, 0] and s["ssim"] == pytest.approx(1.0)
    assert metrics.ssim_each(torch.cat([a, b]), torch.cat([a, a]))[0] == pytest.approx(1.0)
    assert metrics.pairwise_ssim(torch.cat([a, b]), a).shape == (2, 1)
    hit = metrics.best_match(b, torch.cat([a, b]))
    assert hit["index"] == [1] and hit["max"] == pytest.approx(1.0)
    with pytest.raises(metrics.MetricError, match="sizes differ"):
        metrics.pairwise_ssim(torch.zeros(1, 28, 28), torch.zeros(1, 14, 14))
    with pytest.raises(metrics.MetricError, match="single-channel"):
        metrics.as_images(torch.zeros(1, 3, 8, 8))


def test_auc_of_confident_models_is_not_lost_to_saturated_probabilities():
    """Probabilities of margins above ~37 round to 1.0 and tie; margins keep the ranking."""
    import torch

    from pets_lite import train

    margins = np.array([60.0, 50.0, 45.0, 40.0])
    labels = np.array([1, 0, 1, 0])
    logits = np.stack([np.zeros(4), margins], axis=1)
    tied = torch.softmax(torch.tensor(logits, dtype=torch.float32), 1).numpy()
    assert metrics.auc_score(labels, tied) == 0.5               # every score rounds to 1.0
    assert metrics.auc_score(labels, metrics.logit_scores(logits)) == 0.75
    model = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0], [1.0]]))
    data = torch.utils.data.TensorDataset(torch.tensor(margins, dtype=torch.float32)[:, None],
                                          torch.tensor(labels))
    result = train.evaluate(model, data)
    assert result["auc"] == 0.75 and result["acc"] == 0.5
    assert result["loss"] == pytest.approx(np.mean([0.0, 50.0, 0.0, 40.0]))
