"""Batch norms folded into the convolutions that feed them, for a frozen backbone's inference.

In eval mode a batch norm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one convolution with
rescaled weights and a bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval` does the arithmetic). On the
CPU the batch norms of an efficientnet-lite cost a large share of its forward pass in channels-last layout;
``scripts/bench_features.py`` measures the folded network against timm's (``results/features/``).

Which convolution feeds which batch norm is read off one traced forward pass (forward hooks: the batch
norm's input must be the very tensor the convolution returned). torch's own graph matcher
(``torch.fx.experimental.optimization.fuse``) would do this, but it cannot trace models whose padding
depends on the input shape, e.g. timm's TF ``'same'`` convolutions of the offline efficientnet-lite
weights; hence this small hand-written pass. A fold is kept only when the folded model's output equals
the original's on that pass to float rounding; otherwise the unfolded copy is returned (with a warning),
so folding never changes what a model computes.
"""

from __future__ import annotations

import copy
import logging

import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

RELATIVE_TOLERANCE = 1e-4
"""Largest ``max |folded - original| / max |original|`` accepted on the traced pass (float32 rounding of a
deep network is ~1e-6 of the output's scale; a wrong fold changes outputs at order 1)."""


def _feeding_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batch-norm name)`` for every batch norm whose input is a convolution's output."""
    names = {module: name for name, module in model.named_modules()}
    calls: dict[str, int] = {}
    produced: dict[int, str] = {}
    fed: dict[str, int] = {}
    alive: list[torch.Tensor] = []  # keeps traced tensors alive, so no id() is reused during the pass

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(module, nn.Conv2d) and isinstance(output, torch.Tensor):
            produced[id(output)] = name
            alive.append(output)
        elif _foldable(module) and inputs and isinstance(inputs[0], torch.Tensor):
            fed[name] = id(inputs[0])

    handles = [module.register_forward_hook(hook) for module in names if isinstance(module, nn.Conv2d) or _foldable(module)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return [(produced[tensor], bn) for bn, tensor in fed.items()
            if tensor in produced and calls[bn] == 1 and calls[produced[tensor]] == 1]


def _foldable(module: nn.Module) -> bool:
    """A batch norm in eval mode with running statistics (plain, or timm's batch norm + activation)."""
    return (type(module) in (nn.BatchNorm2d, BatchNormAct2d) and not module.training
            and module.running_mean is not None and module.running_var is not None)


def _after_norm(bn: nn.Module) -> nn.Module:
    """What remains of a folded batch norm: nothing, or timm's dropout and activation after it."""
    return nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity()


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fold_batch_norms(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """An eval-mode copy of ``model`` with every batch norm that directly follows a convolution folded into it.

    Parameters
    ----------
    model : torch.nn.Module
        Left untouched (a deep copy is folded).
    example : torch.Tensor
        One input batch of the shape the model will see; traced once to find the convolution → batch-norm
        pairs and to check the folded model against the original.

    Returns
    -------
    torch.nn.Module
        The folded copy, or an unfolded eval copy when folding would change the output beyond
        :data:`RELATIVE_TOLERANCE` (logged as a warning).

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> _ = net[1].running_mean.uniform_(), net[1].running_var.uniform_(1, 2)
    >>> folded = fold_batch_norms(net, torch.randn(2, 3, 8, 8))
    >>> [type(m).__name__ for m in folded]
    ['Conv2d', 'Identity', 'ReLU']
    >>> x = torch.randn(2, 3, 8, 8)
    >>> bool(torch.allclose(folded(x), net(x), atol=1e-6))
    True
    """
    original = copy.deepcopy(model).eval()
    folded = copy.deepcopy(original)
    pairs = _feeding_pairs(folded, example)
    for conv, bn in pairs:
        norm = folded.get_submodule(bn)
        _replace(folded, conv, fuse_conv_bn_eval(folded.get_submodule(conv), norm))
        _replace(folded, bn, _after_norm(norm))
    with torch.inference_mode():
        want, got = original(example), folded(example)
    error = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if not error <= RELATIVE_TOLERANCE:
        log.warning("folding %d batch norms changed %s's output by %.2g (relative); using it unfolded", len(pairs),
                    type(model).__name__, error)
        return original
    log.debug("folded %d batch norms of %s (output change %.2g relative)", len(pairs), type(model).__name__, error)
    return folded


__all__ = ["RELATIVE_TOLERANCE", "fold_batch_norms"]
