"""Grid YAML validation and cell expansion."""

import pytest
import yaml

from benchmark.config import ConfigError, builtin_grids, load_grid, parse_grid
from benchmark.run.seeding import CellSeeds, stable_seed
from benchmark.schema import Cell, GridRecord, HeadSpec

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
    first, second = CellSeeds(cells[0]), CellSeeds(cells[1])
    assert first == CellSeeds(Cell("test_resnet", "bundled", "bundled", 0, 0, "frozen"))
    streams = {first.order, first.augment, first.trunk, first.train, first.head("mse"), first.head("dor")}
    assert len(streams) == 6  # every stream of a cell is distinct
    assert first.order != second.order and first.backbone != second.backbone  # seed 0 vs seed 1
    assert first.backbone == CellSeeds(cells[2]).backbone  # split 1, seed 0: a random backbone is shared by splits


def test_seeds_come_from_the_fields_not_the_display_key(monkeypatch):
    cell = Cell("test_resnet", "bundled", "bundled", 3, 1, "frozen")
    before = CellSeeds(cell)
    assert before.order == stable_seed("test_resnet", "bundled", "bundled", "frozen", 3, 1, "order")
    monkeypatch.setattr(Cell, "key", property(lambda c: f"reformatted/{c.split}/{c.seed}"))
    after = CellSeeds(cell)
    assert (after.order, after.augment, after.trunk, after.train, after.head("dor")) == (
        before.order, before.augment, before.trunk, before.train, before.head("dor"))


def test_compare_pairs_default_and_declared():
    grid = parse_grid({**MINIMAL, "heads": {"mse": {}, "dor": {}, "dor-seed": {}, "coral": {}}})
    assert grid.compare == (("dor", "mse"), ("dor-seed", "mse"), ("coral", "mse"))  # each head against the first
    assert parse_grid({**MINIMAL, "heads": {"dor": {}, "coral": {}}}).compare == (("coral", "dor"),)
    declared = parse_grid({**MINIMAL, "compare": ["dor:mse", ["mse", "dor"]]})
    assert declared.compare == (("dor", "mse"), ("mse", "dor")) and declared.record().reference in ("mse", "dor")
    record = declared.record()
    assert record.heads["dor"].hparams == {"num_bins": 8, "soft_targets": False}  # defaults filled for the report
    assert record.heads["mse"].hparams == {} and record.splits == tuple(range(10))


def test_probe_identity_ignores_the_training_recipe():
    grid, longer = parse_grid(MINIMAL), parse_grid({**MINIMAL, "epochs": 50, "tuning": {"lr": [1.0e-3, 3.0e-3]}})
    cell = grid.cells()[0]
    probe = HeadSpec("probe", "probe")
    assert grid.run_config_hash(cell, probe) == longer.run_config_hash(cell, probe)
    assert grid.run_config_hash(cell, grid.heads[0]) != longer.run_config_hash(cell, longer.heads[0])
    other_data = parse_grid({**MINIMAL, "split_fractions": [0.5, 0.25, 0.25]})
    assert other_data.run_config_hash(cell, probe) != grid.run_config_hash(cell, probe)


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
    ({"heads": {"sord": {"alpha": 0}}}, "heads.sord.alpha"),
    ({"heads": {"dor": {"num_bins": 8.5}}}, "heads.dor.num_bins"),
    ({"heads": {"coral": {"preinit_bias": "yes"}}}, "heads.coral.preinit_bias"),
    ({"compare": ["dor:coral"]}, "compare[0]"),
    ({"compare": ["dor"]}, "compare[0]"),
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
    ({"split_correlation": -0.5}, "split_correlation"),
    ({"split_correlation": "auto"}, "split_correlation"),
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


def test_split_correlation_reaches_the_grid_record_and_not_the_run_identity():
    plain, measured = parse_grid(MINIMAL), parse_grid({**MINIMAL, "split_correlation": 1.5})
    assert plain.record().split_correlation is None and measured.record().split_correlation == 1.5
    assert GridRecord.from_json(measured.record().to_json()).split_correlation == 1.5
    cell = plain.cells()[0]
    assert all(plain.run_config_hash(cell, h) == measured.run_config_hash(cell, h) for h in plain.heads)


def test_resolved_yaml_round_trips():
    grid = parse_grid(MINIMAL)
    again = yaml.safe_load(grid.to_yaml())
    assert again["name"] == "g" and again["heads"][1]["hparams"] == {"num_bins": 8}


def test_the_calibration_pool_runs_the_livec_recipe():
    from benchmark.heads import list_heads

    livec, pool = load_grid("livec"), load_grid("livec-pool")
    assert sorted(h.type for h in livec.heads) == sorted(list_heads())  # every registered head
    same = ("training", "tuning", "image_policies", "hidden", "dropout", "label_norm", "split_fractions", "datasets",
            "regime", "rope")
    assert {key: getattr(pool, key) for key in same} == {key: getattr(livec, key) for key in same}
    assert all(head in livec.heads for head in pool.heads) and set(pool.backbones) <= set(livec.backbones)
    assert len(pool.cells()) == 200 * 2 and len(livec.cells()) == 3 * 10 * 2
