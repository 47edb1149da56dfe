"""Tests of benchmark.models: offline efficientnet-lite weights, local weight files, fingerprints, IQAModel."""

from __future__ import annotations

import huggingface_hub.constants
import matplotlib.cbook
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data
from sklearn.datasets import load_sample_images
from timm.data import create_transform
from torch import nn

from benchmark.models import (
    IQAModel,
    PretrainedWeightsUnavailable,
    WeightMappingError,
    WeightsFileNotFound,
    backbone_data_config,
    create_backbone,
    lite_checkpoint_path,
    load_lite_checkpoint,
    weights_fingerprint,
)

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
NATIVE = {"efficientnet_lite0": (224, 0.875), "efficientnet_lite1": (240, 0.882), "efficientnet_lite2": (260, 0.89)}
CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
MISSILE, PROJECTILE = 657, 744


@pytest.fixture(scope="module", params=LITES)
def lite_classifier(request) -> tuple[str, nn.Module]:
    return request.param, create_backbone(request.param, pretrained=True, num_classes=1000)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "rocket")}


@pytest.fixture(scope="module")
def natural_photos() -> dict[str, Image.Image]:
    """The natural photographs bundled with scikit-image, scikit-learn and matplotlib."""
    images = {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket")}
    images.update({name: Image.fromarray(image) for name, image in zip(("china", "flower"),
                                                                        load_sample_images().images)})
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        images["grace_hopper"] = Image.open(file).convert("RGB")
    return images


def _batch(model: nn.Module, photos: dict[str, Image.Image], **override) -> torch.Tensor:
    """Photos through the model's own resize + centre crop + normalisation (optionally overridden)."""
    transform = create_transform(**{**backbone_data_config(model), **override})
    return torch.stack([transform(image) for image in photos.values()])


def test_offline_lite_classifies_bundled_photos(lite_classifier, photos):
    _, model = lite_classifier
    with torch.inference_mode():
        logits = model(_batch(model, photos))
    chelsea, coffee, rocket = logits.argmax(1).tolist()
    assert chelsea in CATS
    assert coffee == ESPRESSO
    assert {MISSILE, PROJECTILE} & set(logits[2].topk(3).indices.tolist())


def test_offline_lite_data_config_is_native_tf_preprocessing(lite_classifier):
    name, model = lite_classifier
    config = backbone_data_config(model)
    size, crop_pct = NATIVE[name]
    assert config["input_size"] == (3, size, size)
    assert config["crop_pct"] == pytest.approx(crop_pct)
    assert config["interpolation"] == "bicubic"
    # TF efficientnet-lite preprocessing (x - 127) / 128 on 0..255 pixels.
    assert config["mean"] == pytest.approx((127 / 255,) * 3)
    assert config["std"] == pytest.approx((128 / 255,) * 3)


def test_offline_lite_normalisation_matches_stem_batchnorm_statistics(lite_classifier, natural_photos):
    """The stem BN's running variance was learnt under the TF normalisation, not under ImageNet's.

    On these photos the stem outputs have ~0.9x the learnt variance with (x - 127) / 128, and ~4.5x with
    ImageNet's mean/std (whose std of ~0.23 scales the inputs up by ~2.2).
    """
    _, model = lite_classifier
    running_var = model.bn1.running_var
    alive = running_var > 1e-4

    def variance_ratio(x: torch.Tensor) -> float:
        with torch.inference_mode():
            var = model.conv_stem(x).var(dim=(0, 2, 3))
        return float((var[alive] / running_var[alive]).median())

    own = variance_ratio(_batch(model, natural_photos))
    imagenet = variance_ratio(_batch(model, natural_photos, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    assert 0.75 < own < 1.33
    assert imagenet > 3.0


def test_lite0_logits_equal_reference_port():
    """Logits of the reference efficientnet_lite_pytorch port (same checkpoint) on a fixed input.

    The port uses TF 'same' padding and BN eps 1e-3; timm's default efficientnet_lite0 padding differs.
    """
    model = create_backbone("efficientnet_lite0", pretrained=True, num_classes=1000)
    grid = torch.linspace(-1, 1, 224)
    x = torch.stack([grid[:, None] * grid[None, :], grid[:, None].expand(224, 224),
                     grid[None, :].expand(224, 224).flip(1)])[None]
    with torch.inference_mode():
        logits = model(x)[0]
    top = logits.topk(3)
    assert top.indices.tolist() == [782, 818, 604]
    torch.testing.assert_close(top.values, torch.tensor([4.148315, 4.110251, 3.519947]), atol=1e-3, rtol=0)
    torch.testing.assert_close(logits[[0, 281, 967]], torch.tensor([0.221109, -0.361503, -0.781847]),
                               atol=1e-3, rtol=0)


@pytest.mark.parametrize(("name", "count"), [("efficientnet_lite0", 296), ("efficientnet_lite1", 386),
                                             ("efficientnet_lite2", 386)])
def test_checkpoint_tensor_count_matches_timm(name, count):
    checkpoint = torch.load(lite_checkpoint_path(name), map_location="cpu", weights_only=True)
    assert len(checkpoint) == count
    assert len(timm.create_model(name, num_classes=1000).state_dict()) == count
    assert len(timm.create_model(name, num_classes=0).state_dict()) == count - 2


@pytest.fixture(scope="module")
def lite0_checkpoint() -> dict[str, torch.Tensor]:
    return torch.load(lite_checkpoint_path("efficientnet_lite0"), map_location="cpu", weights_only=True)


def test_corrupted_checkpoint_shape_raises_with_index_names_and_shapes(lite0_checkpoint, tmp_path):
    corrupted = dict(lite0_checkpoint)
    assert list(corrupted)[7] == "_blocks.0._bn1.weight"
    corrupted["_blocks.0._bn1.weight"] = torch.ones(33)
    path = tmp_path / "corrupted.pth"
    torch.save(corrupted, path)
    model = timm.create_model("efficientnet_lite0", num_classes=0)
    with pytest.raises(WeightMappingError, match=r"#7 '_blocks\.0\._bn1\.weight' has shape \(33,\)") as error:
        load_lite_checkpoint(model, path)
    assert "'blocks.0.0.bn1.weight' has shape (32,)" in str(error.value)


def test_checkpoint_with_a_missing_tensor_raises_count_error(lite0_checkpoint, tmp_path):
    short = dict(list(lite0_checkpoint.items())[:10] + list(lite0_checkpoint.items())[11:])
    path = tmp_path / "short.pth"
    torch.save(short, path)
    with pytest.raises(WeightMappingError, match="has 293 feature tensors .* expects 294"):
        load_lite_checkpoint(timm.create_model("efficientnet_lite0", num_classes=0), path)


@pytest.fixture(scope="module")
def lite0_features() -> nn.Module:
    return create_backbone("efficientnet_lite0", pretrained=True)


def test_feature_backbone_drops_classifier_and_keeps_every_other_tensor(lite0_features, lite0_checkpoint):
    assert lite0_features.num_classes == 0
    state = lite0_features.state_dict()
    assert len(state) == 294 and not any(key.startswith("classifier.") for key in state)
    torch.testing.assert_close(state["conv_stem.weight"], lite0_checkpoint["_conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(state["bn2.running_var"], lite0_checkpoint["_bn1.running_var"], rtol=0, atol=0)


def test_other_class_count_keeps_pretrained_body_and_a_fresh_classifier(lite0_checkpoint):
    model = create_backbone("efficientnet_lite0", pretrained=True, num_classes=5)
    assert model.classifier.weight.shape == (5, 1280)
    torch.testing.assert_close(model.conv_head.weight, lite0_checkpoint["_conv_head.weight"], rtol=0, atol=0)


def test_pretrained_must_be_bool_or_path():
    with pytest.raises(TypeError, match="not 1"):
        create_backbone("test_resnet", pretrained=1)


def test_features_are_1280_wide_and_give_the_classifier_logits(lite0_features, lite0_checkpoint, photos):
    with torch.inference_mode():
        features = lite0_features(_batch(lite0_features, photos))
        logits = features @ lite0_checkpoint["_fc.weight"].T + lite0_checkpoint["_fc.bias"]
    chelsea, coffee, _ = logits.argmax(1).tolist()
    assert features.shape == (3, 1280)
    assert chelsea in CATS and coffee == ESPRESSO


def test_fingerprint_equal_for_two_loads_and_changes_with_one_weight(lite0_features):
    second = create_backbone("efficientnet_lite0", pretrained=True)
    fingerprint = weights_fingerprint(lite0_features)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert weights_fingerprint(second) == fingerprint
    with torch.no_grad():
        second.conv_head.weight[0, 0, 0, 0] += 1e-3
    assert weights_fingerprint(second) != fingerprint


def _seeded_test_resnet(seed: int, num_classes: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", num_classes=num_classes)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_local_weights_file_round_trip(tmp_path, suffix):
    source = _seeded_test_resnet(1)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), path)
    else:
        torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = create_backbone("test_resnet", pretrained=str(path))
    assert weights_fingerprint(loaded) == weights_fingerprint(source)
    assert weights_fingerprint(loaded) != weights_fingerprint(_seeded_test_resnet(2))


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dict_with_classifier_loads_into_feature_backbone(tmp_path, wrapper):
    source = _seeded_test_resnet(3, num_classes=1000)
    path = tmp_path / "checkpoint.pth"
    torch.save({wrapper: source.state_dict(), "epoch": 7}, path)
    loaded = create_backbone("test_resnet", pretrained=path)
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert loaded.state_dict().keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(loaded.state_dict()[key], tensor, rtol=0, atol=0)


def test_weights_file_with_wrong_keys_lists_them(tmp_path):
    state = _seeded_test_resnet(4).state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["conv1.0.weight"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightMappingError, match=r"missing keys \['conv1\.0\.weight'\], unexpected keys "
                                                 r"\['extra\.weight'\]"):
        create_backbone("test_resnet", pretrained=path)


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "weights.safetensors"
    with pytest.raises(WeightsFileNotFound, match="nowhere/weights.safetensors") as error:
        create_backbone("test_resnet", pretrained=str(path))
    assert isinstance(error.value, FileNotFoundError)


def test_unreachable_hub_raises_instead_of_random_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    with pytest.raises(PretrainedWeightsUnavailable, match="unreachable.*pretrained: false"):
        create_backbone("test_resnet", pretrained=True, cache_dir=tmp_path)


def test_iqa_model_forward_is_head_of_features():
    backbone = _seeded_test_resnet(5)
    head = nn.Linear(backbone.num_features, 3)
    model = IQAModel(backbone, head).eval()
    x = torch.from_numpy(np.linspace(-1, 1, 2 * 3 * 64 * 64, dtype=np.float32).reshape(2, 3, 64, 64))
    with torch.inference_mode():
        features = model.features(x)
        outputs = model(x)
        expected = head(features)
    assert model.num_features == backbone.num_features
    assert features.shape == (2, backbone.num_features)
    assert outputs.shape == (2, 3)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=0)
    assert model.backbone is backbone and model.head is head


def test_iqa_model_rejects_a_backbone_with_a_classifier():
    with pytest.raises(ValueError, match="num_classes=0"):
        IQAModel(_seeded_test_resnet(6, num_classes=10), nn.Linear(10, 1))
