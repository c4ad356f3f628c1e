"""The shared image backbones (bench.backbones), their weights options, and the image baselines built on them
(DeepBit, UTH): what their papers' setups need beyond the registry-wide contract tests."""

import math

import pytest
import torch

from baselines.deepbit import ANGLE_WEIGHTS, DeepBit
from bench.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone
from bench.data import PROTOCOLS, load_split
from bench.deep import random_crop_flip, rotate
from bench.errors import BenchError
from bench.method import make_config, seeded

DIGITS = next(p for p in PROTOCOLS if p.name == "digits")


@pytest.fixture(scope="module")
def images():
    return load_split(DIGITS, "images", "cpu")


def test_small_cnn_prepares_any_small_grey_or_colour_image():
    for channels, size in ((1, 8), (1, 28), (3, 32)):
        net = Backbone("small_cnn", channels)
        x = net.prepare(torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8))
        assert x.shape == (4, channels, 32, 32) and -1 <= x.min() and x.max() <= 1
        assert net(x).shape == (4, net.dim)


def test_imagenet_backbone_takes_grey_images_and_loads_weights_from_a_file(tmp_path):
    from torchvision.models import alexnet

    source = alexnet()
    path = tmp_path / "alexnet.pt"
    torch.save(source.state_dict(), path)
    net = Backbone("alexnet", 1, str(path))
    assert torch.equal(net.net[0][0].weight, source.features[0].weight)  # conv1 filled from the file
    x = net.prepare(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert x.shape == (2, 3, 224, 224)
    assert net.eval()(x).shape == (2, 4096)


def test_bad_weights_are_named(tmp_path):
    with pytest.raises(BenchError, match=r"'IMAGENET_V9' is neither a file nor .*IMAGENET1K_V1"):
        Backbone("alexnet", 3, "IMAGENET_V9")
    unrelated = tmp_path / "other.pt"
    torch.save({"something.else": torch.zeros(1)}, unrelated)
    with pytest.raises(BenchError, match="no parameter name matches"):
        Backbone("small_cnn", 1, str(unrelated))
    with pytest.raises(BenchError, match="unknown backbone 'resnet'"):
        Backbone("resnet", 3)


@pytest.fixture(scope="module")
def resnet():
    with seeded(0):
        return Backbone("resnet50", 3).eval()


def pixels(inputs: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised inputs back to uint8 pixels (exact for inputs cut from uint8 images without resizing)."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (inputs * std + mean).mul(255).round().to(torch.uint8)


def test_resnet50_gives_2048_pooled_features_from_random_weights_or_a_state_dict_file(resnet, tmp_path):
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)  # grey, small: repeated to RGB, resized to 224
    with torch.no_grad():
        assert resnet(resnet.prepare(x)).shape == (2, 2048) and resnet.dim == 2048
    conv1 = torch.randn_like(resnet.net.conv1.weight)
    path = tmp_path / "resnet50.pt"  # torchvision's names; the classifier's keys are ignored
    torch.save({"conv1.weight": conv1, "fc.weight": torch.zeros(1000, 2048)}, path)
    assert torch.equal(Backbone("resnet50", 3, str(path)).net.conv1.weight, conv1)
    with pytest.raises(BenchError, match=r"'IMAGENET_V9' is neither a file nor .*IMAGENET1K_V1, IMAGENET1K_V2"):
        Backbone("resnet50", 3, "IMAGENET_V9")


@pytest.mark.slow
def test_vit_b_16_gives_the_768_d_class_token(tmp_path):
    """A ViT-B/16 of random weights (86M parameters: seconds to build on a CPU), one forward pass."""
    with seeded(0):
        net = Backbone("vit_b_16", 3).eval()
    with torch.no_grad():
        features = net(net.prepare(torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)))
    assert features.shape == (1, 768) and net.dim == 768 and torch.isfinite(features).all()
    token = torch.randn_like(net.net.class_token)
    torch.save({"class_token": token}, tmp_path / "vit.pt")
    assert torch.equal(Backbone("vit_b_16", 3, str(tmp_path / "vit.pt")).net.class_token, token)


def test_the_new_backbones_are_config_choices():
    from baselines.hashnet import HashNet

    assert make_config(HashNet, {"backbone": "vit_b_16"}).backbone == "vit_b_16"
    assert make_config(HashNet, {"backbone": "resnet50", "weights": "IMAGENET1K_V2"}).weights == "IMAGENET1K_V2"
    with pytest.raises(BenchError, match="resnet18"):
        make_config(HashNet, {"backbone": "resnet18"})


def test_a_256_image_is_centre_cropped_to_224_at_test_time_and_small_ones_resized(resnet):
    x = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    inputs = resnet.prepare(x)
    assert inputs.shape == (2, 3, 224, 224) and torch.equal(pixels(inputs), x[..., 16:240, 16:240])
    assert resnet.prepare(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)).shape == (2, 3, 224, 224)


def test_training_crops_are_random_224_windows_of_the_256_image_mirrored_at_random(resnet):
    n = 16
    x = torch.zeros(n, 3, 256, 256, dtype=torch.uint8)
    x[:, 0] = torch.arange(256, dtype=torch.uint8)[:, None]  # each pixel names its row and column
    x[:, 1] = torch.arange(256, dtype=torch.uint8)[None, :]
    x[:, 2] = torch.randint(0, 256, (n, 256, 256), dtype=torch.uint8)
    out = pixels(resnet.augment(x, torch.Generator().manual_seed(0)))
    assert out.shape == (n, 3, 224, 224)
    windows = []
    for i in range(n):
        top, mirrored = int(out[i, 0, 0, 0]), bool(out[i, 1, 0, 0] > out[i, 1, 0, 1])
        left = int(out[i, 1, 0, -1 if mirrored else 0])
        window = x[i, :, top : top + 224, left : left + 224]
        assert torch.equal(out[i], window.flip(-1) if mirrored else window)  # a whole-pixel crop, no resampling
        windows.append((top, left, mirrored))
    assert len({(t, left) for t, left, _ in windows}) > n // 2 and {m for *_, m in windows} == {False, True}
    again = pixels(resnet.augment(x, torch.Generator().manual_seed(0)))
    assert torch.equal(again, out)  # the method's generator decides every draw
    small = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)  # as before: crop the prepared 224 input
    expected = random_crop_flip(resnet.prepare(small), torch.Generator().manual_seed(1))
    assert torch.equal(resnet.augment(small, torch.Generator().manual_seed(1)), expected)


def test_rotate_turns_images_and_is_the_identity_at_zero():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert torch.allclose(rotate(x, 0.0), x, atol=1e-4)
    assert torch.allclose(rotate(x, 90.0), torch.rot90(x, 1, (2, 3)), atol=1e-3) or torch.allclose(
        rotate(x, 90.0), torch.rot90(x, -1, (2, 3)), atol=1e-3
    )


def test_deepbit_rotation_weights_and_its_frozen_trunk(images):
    assert ANGLE_WEIGHTS[2] == 1.0 and ANGLE_WEIGHTS[0] == ANGLE_WEIGHTS[4] < ANGLE_WEIGHTS[1]
    method = DeepBit(16, make_config(DeepBit, {"stage1_iterations": 20, "stage2_iterations": 5}), seed=0)
    with seeded(0):
        untouched = Backbone("small_cnn", 1).state_dict()  # the trunk DeepBit builds with the same seed
    x = images.x_train[:400]  # what is checked does not need the whole training set
    with seeded(0):
        method.fit(x)
    after = method.net_.backbone.state_dict()
    assert all(torch.equal(untouched[k], after[k]) for k in untouched)  # the release trains only the new layer
    # one log entry at the end of each stage; the rotation term only in the second
    log = method.training_["log"]
    assert [(e["stage"], e["iteration"]) for e in log] == [(1, 20), (2, 25)]
    assert "rotation" not in log[0] and log[1]["rotation"] > 0
    # codes threshold each bit at its training-set mean
    f = method.net_.outputs(x)
    codes = method.encode(x)
    assert torch.equal(codes == 1, f >= f.mean(0))


def test_uth_logs_its_three_criteria(images):
    from baselines.uth import UTH

    with seeded(0):
        method = UTH(8, make_config(UTH, {"iterations": 30}), seed=0).fit(images.x_train)
    (entry,) = method.training_["log"]
    assert set(entry) == {"iteration", "loss", "triplet", "quantization", "entropy"} and entry["iteration"] == 30
    assert 0 < entry["entropy"] <= 8 * math.log(2) + 1e-6  # the batch entropy of 8 bits, in nats
    assert entry["loss"] == pytest.approx(entry["triplet"] + entry["quantization"] - entry["entropy"], abs=1e-4)
