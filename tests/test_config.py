"""Grid YAML validation and cell expansion."""

import pytest
import yaml

from benchmark.config import Cell, ConfigError, builtin_grids, load_grid, parse_grid

MINIMAL = {"name": "g", "backbones": ["test_resnet"], "heads": {"mse": {}, "dor": {"num_bins": 8}},
           "datasets": ["bundled"]}


def test_builtin_grids_parse():
    assert {"default", "paper"} <= set(builtin_grids())
    default = load_grid()
    assert default.name == "default" and default.regime == "frozen"
    assert {h.label for h in default.heads} >= {"mse", "dor", "dor-seed"}
    assert default.splits * len(default.seeds) >= 10
    paper = load_grid("paper")
    assert paper.regime == "finetune" and paper.label_norm == "train-minmax"
    assert {h.hparams.get("num_bins") for h in paper.heads if h.type.startswith("dor")} == {28}


def test_cells_and_keys():
    grid = parse_grid({**MINIMAL, "splits": 3, "seeds": [0, 1],
                       "datasets": ["bundled", {"train": "koniq10k", "test": "livec"}]})
    cells = grid.cells()
    assert len(cells) == 1 * 2 * 3 * 2
    assert cells[0] == Cell("test_resnet", "bundled", "bundled", 0, 0, "frozen")
    assert cells[0].key == "test_resnet|bundled->bundled|frozen|split0|seed0"
    assert cells[0].pair_key == "test_resnet|bundled->bundled|frozen"
    assert len({c.key for c in cells}) == len(cells)
    assert cells[0].seeds == Cell("test_resnet", "bundled", "bundled", 0, 0, "frozen").seeds
    first, second = cells[0].seeds, cells[1].seeds
    streams = {first.order, first.augment, first.trunk, first.train, first.head("mse"), first.head("dor")}
    assert len(streams) == 6  # every stream of a cell is distinct
    assert first.order != second.order and first.backbone != second.backbone  # seed 0 vs seed 1
    assert first.backbone == cells[2].seeds.backbone  # split 1, seed 0: a random backbone is shared by splits


def test_head_init_and_tuning():
    grid = parse_grid({**MINIMAL, "heads": {"mse": {}, "mse-zero": {"type": "mse", "init": "default"}},
                       "tuning": {"lr": [3.0e-4, 1.0e-3], "weight_decay": [0.0]}})
    assert [(h.label, h.type, h.init, h.hparams) for h in grid.heads] == [
        ("mse", "mse", "prior", {}), ("mse-zero", "mse", "default", {})]
    assert grid.tuning == (("lr", (3e-4, 1e-3)), ("weight_decay", (0.0,)))
    assert parse_grid({**MINIMAL, "head_init": "default"}).heads[0].init == "default"
    cell = grid.cells()[0]
    assert grid.run_config_hash(cell, grid.heads[0]) != grid.run_config_hash(cell, grid.heads[1])
    untuned = parse_grid({**MINIMAL, "heads": {"mse": {}}})
    assert untuned.run_config_hash(cell, untuned.heads[0]) != grid.run_config_hash(cell, grid.heads[0])


def test_head_variants_and_backbone_line():
    grid = parse_grid({**MINIMAL, "backbones": {"resnet50": {"pretrained": True}, "test_vit": None},
                       "heads": {"dor-k8": {"type": "dor", "num_bins": 8}, "mse": None}})
    assert [(b.name, b.pretrained) for b in grid.backbones] == [("resnet50", True), ("test_vit", False)]
    assert grid.heads[0].label == "dor-k8" and grid.heads[0].type == "dor" and grid.heads[0].hparams == {"num_bins": 8}


@pytest.mark.parametrize("patch, key", [
    ({"epochz": 3}, "epochz"),
    ({"regime": "linear"}, "regime"),
    ({"epochs": 0}, "epochs"),
    ({"optimizer": {"name": "adamw", "lrate": 1}}, "optimizer.lrate"),
    ({"heads": {"mystery": {}}}, "heads.mystery"),
    ({"split_fractions": [0.5, 0.5, 0.5]}, "split_fractions"),
    ({"backbones": {"resnet50": {"pretrained": 3}}}, "backbones.resnet50.pretrained"),
    ({"custom_datasets": {"mine": {"csv": "x.csv", "higher_is_better": True}}}, "custom_datasets.mine"),
    ({"heads": {"dor": {"num_bin": 8}}}, "heads.dor.num_bin"),
    ({"heads": {"mse": [1, 2]}}, "heads.mse"),
    ({"optimizer": {"lr": "1e-4"}}, "optimizer.lr"),
    ({"save_weights": "yes"}, "save_weights"),
    ({"head_init": "zeros"}, "head_init"),
    ({"heads": {"mse": {"init": "random"}}}, "heads.mse.init"),
    ({"heads": {"probe": {"type": "mse"}}}, "heads.probe"),
    ({"tuning": {"lr": []}}, "tuning.lr"),
    ({"tuning": {"lr": [1.0e-3, 1.0e-3]}}, "tuning.lr"),
    ({"tuning": {"momentum": [0.9]}}, "tuning.momentum"),
    ({"tuning": {"lr": ["fast"]}}, "tuning.lr"),
])
def test_bad_values_name_the_key_and_file(tmp_path, patch, key):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **patch}))
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_missing_file_and_required_key(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="'heads': missing required key"):
        parse_grid({k: v for k, v in MINIMAL.items() if k != "heads"})


def test_resolved_yaml_round_trips():
    grid = parse_grid(MINIMAL)
    again = yaml.safe_load(grid.to_yaml())
    assert again["name"] == "g" and again["heads"][1]["hparams"] == {"num_bins": 8}
