"""Seeded, leakage-free train/val/test splits."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmark.data import SplitError, make_split, read_label_file


def assert_partition(labels: pd.DataFrame, parts: dict[str, pd.DataFrame]) -> None:
    """Every row in exactly one part, and no ref shared between parts."""
    assert list(parts) == ["train", "val", "test"]
    indices = [index for part in parts.values() for index in part.index]
    assert sorted(indices) == sorted(labels.index)
    refs = [set(part["ref"]) for part in parts.values()]
    assert not (refs[0] & refs[1]) and not (refs[0] & refs[2]) and not (refs[1] & refs[2])


@pytest.mark.parametrize("name", ["kadid10k", "live"])
def test_no_ref_overlap_over_ten_seeds_on_real_label_lists(name: str) -> None:
    labels = read_label_file(name)
    for seed in range(10):
        parts = make_split(labels, seed)
        assert_partition(labels, parts)
        share = len(parts["train"]) / len(labels)
        # whole groups: KADID has 81 groups of 125 rows, LIVE 29 groups of 17-39 rows
        assert 0.5 < share < 0.7


def test_authentic_split_matches_fractions_to_one_row() -> None:
    labels = read_label_file("livec")  # 1161 single-image groups
    parts = make_split(labels, seed=3, fractions=(0.8, 0.1, 0.1))
    assert [len(part) for part in parts.values()] == [929, 116, 116]


def test_same_seed_same_split_other_seed_differs() -> None:
    labels = read_label_file("live")
    first, again, other = make_split(labels, 7), make_split(labels, 7), make_split(labels, 8)
    for part in ("train", "val", "test"):
        pd.testing.assert_frame_equal(first[part], again[part])
    assert set(first["test"]["ref"]) != set(other["test"]["ref"])


def test_hand_computed_group_assignment() -> None:
    # groups a..e with 2 rows each; midpoints 0.1, 0.3, ... -> 3 groups train, 1 val, 1 test
    labels = pd.DataFrame({"ref": list("aabbccddee"), "mos": range(10)})
    parts = make_split(labels, seed=0)
    assert [len(part) for part in parts.values()] == [6, 2, 2]
    assert_partition(labels, parts)


def test_every_part_gets_a_group_even_when_one_group_dominates() -> None:
    labels = pd.DataFrame({"ref": ["big"] * 97 + ["x", "y", "z"]})
    for seed in range(10):
        parts = make_split(labels, seed)
        assert all(len(part) > 0 for part in parts.values())
        assert_partition(labels, parts)


def test_errors_for_too_few_groups_and_bad_fractions() -> None:
    with pytest.raises(SplitError, match="only 2 content groups"):
        make_split(pd.DataFrame({"ref": ["a", "a", "b"]}), seed=0)
    labels = pd.DataFrame({"ref": list("abcdef")})
    with pytest.raises(SplitError, match="summing to 1"):
        make_split(labels, seed=0, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(SplitError, match="positive"):
        make_split(labels, seed=0, fractions=(0.8, 0.2, 0.0))
