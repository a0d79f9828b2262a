import pytest
import torch
from torch import nn

from pets_lite import models


@pytest.mark.parametrize("activation", models.ACTIVATIONS)
def test_small_cnn_shapes_for_every_activation(activation):
    m = models.SmallCNN(width=8, depth=3, activation=activation)
    assert m(torch.rand(5, 1, 28, 28)).shape == (5, 2)


def test_rgb_and_multiclass():
    m = models.SmallCNN(in_channels=3, n_classes=9, width=4, depth=2)
    assert m(torch.rand(2, 3, 28, 28)).shape == (2, 9)


def test_wrong_input_shape_is_a_clear_error():
    m = models.SmallCNN(width=4, depth=1)
    with pytest.raises(ValueError,
                       match=r"expected a batch of shape \(N, 1, H, W\), got \(28, 28\)"):
        m(torch.rand(28, 28))
    with pytest.raises(ValueError, match=r"got \(2, 3, 28, 28\)"):
        m(torch.rand(2, 3, 28, 28))


def test_default_is_dp_safe_groupnorm_and_no_inplace():
    m = models.SmallCNN()
    kinds = {type(x) for x in m.modules()}
    assert nn.GroupNorm in kinds and nn.BatchNorm2d not in kinds
    assert not any(getattr(x, "inplace", False) for x in m.modules())


def test_he_cnn_is_polynomial():
    m = models.build_model("he_cnn")
    kinds = {type(x) for x in m.modules()}
    assert models.Square in kinds and nn.AvgPool2d in kinds
    assert not kinds & {nn.ReLU, nn.MaxPool2d, nn.GroupNorm, nn.BatchNorm2d}
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(models.Square()(x), x**2)


def test_groupnorm_groups_divide_channels():
    assert models.make_norm("group", 12, groups=8).num_groups == 6


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": "sigmoidish"}, "unknown activation"),
    ({"norm": "layer"}, "unknown norm"),
    ({"pool": "min"}, "pool must be"),
    ({"depth": 0}, "depth and width"),
])
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.SmallCNN(**kwargs)


def test_build_model_factory():
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("resnet152")
    assert models.count_parameters(models.build_model("cnn", width=8, depth=2)) > 0


def test_monai_resnet_forward():
    m = models.build_model("monai_resnet")
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 2)
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules())  # why DP must fix it (ch. 02)
