"""Batch norms folded into their convolutions: same outputs, fewer modules, and no fold where it would change them."""

import logging

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from benchmark.folding import fold_batch_norms
from benchmark.models import create_backbone


def _randomised(model: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters (fresh ones are the identity)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -1, 1), (module.running_var, 0.5, 2),
                                      (module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5)):
                tensor.data.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_conv_batchnorm_pairs_fold_to_the_same_output():
    net = _randomised(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 4, 1), BatchNormAct2d(4, act_layer=nn.ReLU6)))
    x = torch.randn(2, 3, 12, 12)
    folded = fold_batch_norms(net, x)
    assert _norms(net) == 2 and _norms(folded) == 0
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4][1], nn.ReLU6)  # timm's activation stays
    other = torch.randn(3, 3, 12, 12)  # not the traced input
    with torch.inference_mode():
        torch.testing.assert_close(folded(other), net(other), rtol=1e-5, atol=1e-5)


class _Residual(nn.Module):
    """conv -> bn, but the convolution's output is also used elsewhere: folding would change the result."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class _Shared(nn.Module):
    """One batch norm applied after two convolutions: it cannot be folded into both."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.a(x)) + self.bn(self.b(x))


def test_a_fold_that_would_change_the_output_is_refused(caplog):
    x = torch.randn(2, 3, 8, 8)
    for net in (_randomised(_Residual()), _randomised(_Shared())):
        with caplog.at_level(logging.WARNING, logger="benchmark.folding"):
            kept = fold_batch_norms(net, x)
        assert _norms(kept) == 1
        with torch.inference_mode():
            assert torch.equal(kept(x), net(x))
    assert "using it unfolded" in caplog.text  # the residual's fold was tried and undone; the shared one never tried


def test_a_training_mode_model_is_folded_as_the_eval_copy_and_left_untouched():
    net = _randomised(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).train()
    folded = fold_batch_norms(net, torch.randn(2, 3, 8, 8))
    assert net.training and _norms(net) == 1 and not folded.training and _norms(folded) == 0


@pytest.mark.parametrize("name, pretrained", [("efficientnet_lite0", True), ("test_resnet", False)])
def test_timm_backbones_fold_completely_and_keep_their_features(name, pretrained):
    torch.manual_seed(0)
    backbone = _randomised(create_backbone(name, pretrained)) if not pretrained else create_backbone(name, True)
    side = 224 if pretrained else 64
    folded = fold_batch_norms(backbone, torch.randn(2, 3, side, side))
    assert _norms(backbone) > 0 and _norms(folded) == 0
    other = torch.randn(3, 3, side, side)
    with torch.inference_mode():
        want, got = backbone(other), folded(other)
    assert float((got - want).abs().max() / want.abs().max()) < 1e-4
