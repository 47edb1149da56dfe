"""Proxy MOS from a fixed ensemble of full-reference metrics (``piq``), the KADIS-700k weak-label idea.

For a distorted image x and its reference y, two complementary metrics are computed at half
resolution (HaarPSI downsamples by 2 internally, as published; SSIM is given 2 x 2 average-pooled
images, the downsampling rule of Wang et al.'s reference code), and each is mapped to a quality in
[0, 1] by a fixed rule (no data-dependent normalisation):

===========  ===========================================  =====================
metric       piq call                                     quality rule
===========  ===========================================  =====================
``ssim``     ``piq.ssim``: structure, per R, G, B, mean   ``clip(ssim, 0, 1)``
``haarpsi``  ``piq.haarpsi``: Haar-wavelet edges on Y      ``clip(haarpsi, 0, 1)``
             plus I/Q chroma similarity
===========  ===========================================  =====================

The proxy MOS is ``1 + 4 * mean(qualities)`` on a 1-5 scale, higher = better. It is a proxy computed
by algorithms, not human opinion. Cost decided the ensemble: piq's pixel-domain VIF alone costs more
than both together on a CPU, and GMSD (another luminance-gradient metric, largely redundant with
HaarPSI) would add a third of the build time of the default dataset.
"""

from __future__ import annotations

import numpy as np
import piq
import torch
import torch.nn.functional as F

METRICS: tuple[str, ...] = ("ssim", "haarpsi")
SSIM_POOL = 2


def metric_scores(distorted: np.ndarray, reference: np.ndarray, chunk: int = 10) -> dict[str, np.ndarray]:
    """Compute the raw full-reference metrics of a batch of distorted images against one reference.

    Parameters
    ----------
    distorted : numpy.ndarray
        uint8 array [N, H, W, 3].
    reference : numpy.ndarray
        uint8 array [H, W, 3].
    chunk : int
        Images per torch call; on a CPU, small chunks avoid the page-fault cost of huge temporaries.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"ssim", "haarpsi"}`` -> float64 arrays of length N.
    """
    y_full = torch.from_numpy(reference.copy()).permute(2, 0, 1).float().div_(255.0).unsqueeze(0).contiguous()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in METRICS}
    with torch.no_grad():
        for start in range(0, len(distorted), chunk):
            x = torch.from_numpy(np.ascontiguousarray(distorted[start : start + chunk]))
            x = x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()
            y = y_full.expand_as(x)
            parts["ssim"].append(
                piq.ssim(F.avg_pool2d(x, SSIM_POOL), F.avg_pool2d(y, SSIM_POOL), data_range=1.0, reduction="none")
            )
            parts["haarpsi"].append(piq.haarpsi(x, y, data_range=1.0, reduction="none"))
    return {name: torch.cat(values).double().numpy() for name, values in parts.items()}


def metric_qualities(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map raw metric values to qualities in [0, 1] with the fixed rules of the module docstring."""
    return {
        "ssim": np.clip(scores["ssim"], 0.0, 1.0),
        "haarpsi": np.clip(scores["haarpsi"], 0.0, 1.0),
    }


def proxy_mos(scores: dict[str, np.ndarray]) -> np.ndarray:
    """Return the proxy MOS ``1 + 4 * mean(qualities)`` (1-5, higher = better) from raw metric values.

    Examples
    --------
    >>> proxy_mos({"ssim": np.array([1.0]), "haarpsi": np.array([1.0])}).tolist()
    [5.0]
    >>> proxy_mos({"ssim": np.array([-0.2, 0.5]), "haarpsi": np.array([0.5, 0.75])}).tolist()
    [2.0, 3.5]
    """
    qualities = metric_qualities(scores)
    return 1.0 + 4.0 * np.mean([qualities[name] for name in METRICS], axis=0)
