"""Label-table checks shared by every dataset, and the loader for custom CSV datasets.

A label table (what :func:`benchmark.data.load_labels` returns) has the columns
``image`` (absolute path, str), ``mos`` (score as in the label file), ``u`` (normalised to [0, 1] with
the declared scale, clamped, higher = better), ``ref`` (content group) and ``distortion`` (type or "").
Its :class:`~benchmark.data.scales.DatasetInfo` is attached as ``table.attrs["dataset_info"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.errors import (
    DuplicateImageError,
    InvalidScoreError,
    LabelFileError,
    MissingImagesError,
    ScoreOutOfRangeError,
)
from benchmark.data.scales import DatasetInfo, mos_to_u

logger = logging.getLogger(__name__)


def read_csv_table(source: Path | object, name: str, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV with every cell as a stripped string, checking that ``required`` columns exist.

    Parameters
    ----------
    source : Path or file-like
        The CSV to read.
    name : str
        How to name the file in error messages.
    required : sequence of str
        Columns that must be present.

    Returns
    -------
    pandas.DataFrame
        One row per data line, RangeIndex (row ``i`` is file line ``i + 2``).
    """
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabelFileError(f"cannot read label file {name}: {exc}") from exc
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise LabelFileError(
            f"label file {name} lacks column(s) {missing}; found {list(table.columns)}. "
            f"The header must name at least {list(required)}."
        )
    return table.apply(lambda column: column.str.strip())


def parse_scores(raw: pd.Series, source: str) -> np.ndarray:
    """Convert a column of score strings to float64, rejecting empty, NaN or non-numeric cells.

    Raises
    ------
    InvalidScoreError
        Naming the 0-based rows and their values.
    """
    scores = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise InvalidScoreError(source, bad.tolist(), raw.iloc[bad].tolist())
    return scores


def check_scale(scores: np.ndarray, source: str, lo: float, hi: float) -> None:
    """Raise :class:`ScoreOutOfRangeError` for scores outside ``[lo, hi]``, naming the rows."""
    bad = np.flatnonzero((scores < lo) | (scores > hi))
    if bad.size:
        raise ScoreOutOfRangeError(source, bad.tolist(), scores[bad].tolist(), lo, hi)


def check_unique(images: Sequence[str], source: str) -> None:
    """Raise :class:`DuplicateImageError` when an image appears on more than one row."""
    series = pd.Series(list(images))
    dupes = series[series.duplicated()].unique().tolist()
    if dupes:
        raise DuplicateImageError(source, dupes)


def locate_images(candidates: Sequence[Sequence[Path]], dataset: str, layout: str) -> list[str]:
    """Return the first candidate layout whose files all exist, as absolute path strings.

    Parameters
    ----------
    candidates : sequence of sequences of Path
        One full list of image paths per accepted folder layout, in preference order.
    dataset : str
        Dataset name for the error message.
    layout : str
        Description of the expected folder layout for the error message.

    Raises
    ------
    MissingImagesError
        When no layout is complete; names the layout with the fewest missing files.
    """
    best: list[str] | None = None
    total = 0
    for paths in candidates:
        total = len(paths)
        missing = [str(path) for path in paths if not path.is_file()]
        if not missing:
            return [str(path.absolute()) for path in paths]
        if best is None or len(missing) < len(best):
            best = missing
    raise MissingImagesError(dataset, best or [], total, layout)


def assemble(
    images: Sequence[str],
    mos: np.ndarray,
    ref: Sequence[str],
    distortion: Sequence[str],
    info: DatasetInfo,
    extra: dict[str, Sequence[object]] | None = None,
) -> pd.DataFrame:
    """Build a label table with the standard columns (plus ``extra``) and attach ``info``."""
    table = pd.DataFrame(
        {
            "image": list(images),
            "mos": mos.astype(np.float64),
            "u": mos_to_u(mos, info),
            "ref": list(ref),
            "distortion": list(distortion),
        }
    )
    for column, values in (extra or {}).items():
        table[column] = list(values)
    table.attrs["dataset_info"] = info
    return table


def load_custom_labels(
    csv_path: str | Path,
    higher_is_better: bool,
    scale: tuple[float, float] | None = None,
    root: str | Path | None = None,
) -> pd.DataFrame:
    """Load your own dataset from a CSV with columns ``image, score[, ref][, distortion]``.

    Parameters
    ----------
    csv_path : str or Path
        The CSV. ``image`` holds image paths; relative ones resolve against ``root`` (or, when
        ``root`` is None, against the CSV's own folder). ``score`` holds the opinion score.
        ``ref`` (optional) names the content group (e.g. the reference image of a synthetic
        distortion); rows without it form their own group. ``distortion`` (optional) names the type.
    higher_is_better : bool
        False for DMOS-like scores (lower = better).
    scale : (float, float), optional
        Declared score scale ``(lo, hi)``; scores outside it are an error. When None, the observed
        minimum and maximum of the whole file are used (so ``u`` spans exactly [0, 1]; note that this
        lets the test rows influence the scale; declare the scale when you know it).
    root : str or Path, optional
        Folder that relative image paths resolve against.

    Returns
    -------
    pandas.DataFrame
        Columns ``image, mos, u, ref, distortion``; ``attrs["dataset_info"]`` holds a
        :class:`DatasetInfo` named after the CSV's stem.

    Raises
    ------
    LabelFileError, InvalidScoreError, ScoreOutOfRangeError, DuplicateImageError, MissingImagesError
    """
    csv_path = Path(csv_path)
    table = read_csv_table(csv_path, str(csv_path), required=("image", "score"))
    if table.empty:
        raise LabelFileError(f"{csv_path} has a header but no rows; add one row per image.")
    scores = parse_scores(table["score"], str(csv_path))
    if scale is None:
        lo, hi = float(scores.min()), float(scores.max())
        if lo == hi:
            raise LabelFileError(f"{csv_path}: every score equals {lo}; pass scale=(lo, hi) explicitly.")
        logger.info("%s: no scale declared, using the observed range [%g, %g]", csv_path, lo, hi)
    else:
        lo, hi = float(scale[0]), float(scale[1])
        if not lo < hi:
            raise LabelFileError(f"{csv_path}: scale={scale!r} must satisfy lo < hi.")
        check_scale(scores, str(csv_path), lo, hi)
    base = Path(root) if root is not None else csv_path.parent
    paths = [path if path.is_absolute() else base / path for path in map(Path, table["image"])]
    check_unique([str(path.absolute()) for path in paths], str(csv_path))
    layout = f"relative paths in the image column resolve against {base.absolute()}; pass root= to change that"
    images = locate_images([paths], csv_path.stem, layout)
    has_ref = "ref" in table.columns
    ref = table["ref"].where(table["ref"] != "", table["image"]) if has_ref else table["image"]
    distortion = table["distortion"] if "distortion" in table.columns else [""] * len(table)
    info = DatasetInfo(csv_path.stem, lo, hi, higher_is_better, has_ref, len(table))
    return assemble(images, scores, ref.tolist(), list(distortion), info)
