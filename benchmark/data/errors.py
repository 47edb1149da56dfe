"""Named exceptions of the data layer; each message says what is wrong, where, and what to do."""

from __future__ import annotations

from collections.abc import Sequence


def _preview(items: Sequence[object], limit: int = 5) -> str:
    """Format the first ``limit`` items of a sequence, noting how many were left out."""
    shown = ", ".join(str(item) for item in items[:limit])
    rest = len(items) - limit
    return f"{shown} (and {rest} more)" if rest > 0 else shown


class DataError(Exception):
    """Base class of every error raised by :mod:`benchmark.data`."""


class UnknownDatasetError(DataError, ValueError):
    """A dataset name that is not in the registry."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(
            f"unknown dataset {name!r}; known datasets: {', '.join(known)}. "
            "For your own images use benchmark.data.load_custom_labels(csv_path, higher_is_better)."
        )
        self.name = name


class MissingImagesError(DataError, FileNotFoundError):
    """Images listed by a label file that are not on disk (or no image folder at all)."""

    def __init__(self, dataset: str, missing: Sequence[str], total: int, layout: str) -> None:
        super().__init__(
            f"dataset {dataset!r}: {len(missing)} of {total} images not found, e.g. {_preview(missing, 3)}. "
            f"Expected layout: {layout}."
        )
        self.dataset = dataset
        self.missing = list(missing)


class CorruptImageError(DataError, OSError):
    """An image file that PIL cannot decode (corrupt, truncated, or not an image)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"cannot decode image {path}: {reason}. Replace or re-download the file; "
            "benchmark.data.find_bad_images(labels) lists every bad file of a label table."
        )
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Rebuild from ``(path, reason)``, so the error crosses from a decoding worker process intact."""
        return type(self), (self.path, self.reason)


class CorruptImagesError(CorruptImageError):
    """Several image files that do not decode, every one named (found by decoding or reading them all)."""

    def __init__(self, bad: Sequence[tuple[str, str]]) -> None:
        DataError.__init__(
            self,
            f"{len(bad)} image file(s) cannot be decoded:\n"
            + "".join(f"      {path}: {reason}\n" for path, reason in bad)
            + "    Replace or re-download them (or remove their rows from the label file); "
            "benchmark.data.find_bad_images(labels) / dor-bench check list every bad file of a dataset."
        )
        self.bad = [(str(path), str(reason)) for path, reason in bad]
        self.path, self.reason = self.bad[0]

    @property
    def paths(self) -> list[str]:
        """Every bad file, in label-table order."""
        return [path for path, _ in self.bad]

    def __reduce__(self) -> tuple[type, tuple[list[tuple[str, str]]]]:
        return type(self), (self.bad,)


def raise_corrupt(bad: Sequence[tuple[str, str]]) -> None:
    """Raise one error naming every ``(path, reason)`` (a single file keeps the one-file message)."""
    if len(bad) == 1:
        raise CorruptImageError(*bad[0])
    if bad:
        raise CorruptImagesError(bad)


class InvalidScoreError(DataError, ValueError):
    """Scores that are missing (NaN) or not numbers."""

    def __init__(self, source: str, rows: Sequence[int], values: Sequence[object]) -> None:
        pairs = [f"row {row}: {value!r}" for row, value in zip(rows, values)]
        super().__init__(
            f"{source}: {len(rows)} scores are missing or not numeric ({_preview(pairs)}); "
            "rows are 0-based data rows (file line = row + 2). Fix or remove these rows."
        )
        self.rows = list(rows)


class DuplicateImageError(DataError, ValueError):
    """The same image listed on more than one row."""

    def __init__(self, source: str, images: Sequence[str]) -> None:
        super().__init__(
            f"{source}: {len(images)} images appear on more than one row ({_preview(images)}). "
            "Keep one row per image (average the scores if they are repeated ratings)."
        )
        self.images = list(images)


class ScoreOutOfRangeError(DataError, ValueError):
    """Scores outside the declared scale of a dataset."""

    def __init__(self, source: str, rows: Sequence[int], values: Sequence[float], lo: float, hi: float) -> None:
        pairs = [f"row {row}: {value!r}" for row, value in zip(rows, values)]
        super().__init__(
            f"{source}: {len(rows)} scores lie outside the declared scale [{lo}, {hi}] ({_preview(pairs)}). "
            "Fix the scores or declare the right scale (scale=(lo, hi))."
        )
        self.rows = list(rows)


class LabelFileError(DataError, ValueError):
    """A label file that lacks required columns or cannot be read."""


class SplitError(DataError, ValueError):
    """A split that cannot be made (bad fractions, too few content groups)."""


class RecipeError(DataError, ValueError):
    """An invalid recipe for the embedded ``bundled`` dataset."""


class ImagePolicyError(DataError, ValueError):
    """An image policy (YAML ``image_policy`` mapping) with an unknown key or a bad value."""

    def __init__(self, where: str, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{where}.{key}: {value!r} is not allowed; expected {allowed}.")
        self.where = where
        self.key = key
        self.value = value


class PatchSizeError(DataError, ValueError):
    """Images that are smaller than the patch (the backbone's input size) at their policy resolution."""

    def __init__(self, policy: str, patch: int, images: Sequence[str], sizes: Sequence[tuple[int, int]]) -> None:
        pairs = [f"{image} ({width}x{height})" for image, (width, height) in zip(images, sizes)]
        super().__init__(
            f"{len(pairs)} images are smaller than the {patch}x{patch} patch at policy '{policy}': "
            f"{_preview(pairs)}. Patches are never padded or upscaled; use a smaller image_size, or declare an "
            f"image_policy whose resize gives both sides >= {patch} (e.g. resize: [W, H] or resize: imagenet)."
        )
        self.patch = patch
        self.images = list(images)


class StoreSpaceError(DataError, OSError):
    """Too little free disk space for an image store, found before anything is decoded."""

    def __init__(self, folder: str, needed: int, free: int) -> None:
        super().__init__(
            f"the image store {folder} needs {needed / 2**30:.2f} GiB but its disk has {free / 2**30:.2f} GiB free. "
            "Free some space, or point the cache elsewhere (DOR_IQA_CACHE=/big/disk)."
        )
        self.folder = folder
        self.needed = needed
        self.free = free
