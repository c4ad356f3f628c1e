"""The shared image backbones (bench.backbones), their weights options, and the image baselines built on them
(DeepBit, UTH): what their papers' setups need beyond the registry-wide contract tests."""

import math

import pytest
import torch

from baselines.deepbit import ANGLE_WEIGHTS, DeepBit
from bench.backbones import Backbone
from bench.data import PROTOCOLS, load_split
from bench.deep import rotate
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
    with seeded(0):
        method.fit(images.x_train)
    after = method.net_.backbone.state_dict()
    assert all(torch.equal(untouched[k], after[k]) for k in untouched)  # the release trains only the new layer
    # one log entry at the end of each stage; the rotation term only in the second
    log = method.training_["log"]
    assert [(e["stage"], e["iteration"]) for e in log] == [(1, 20), (2, 25)]
    assert "rotation" not in log[0] and log[1]["rotation"] > 0
    # codes threshold each bit at its training-set mean
    f = method.net_.outputs(images.x_train)
    codes = method.encode(images.x_train)
    assert torch.equal(codes == 1, f >= f.mean(0))


def test_uth_logs_its_three_criteria(images):
    from baselines.uth import UTH

    with seeded(0):
        method = UTH(8, make_config(UTH, {"iterations": 30}), seed=0).fit(images.x_train)
    (entry,) = method.training_["log"]
    assert set(entry) == {"iteration", "loss", "triplet", "quantization", "entropy"} and entry["iteration"] == 30
    assert 0 < entry["entropy"] <= 8 * math.log(2) + 1e-6  # the batch entropy of 8 bits, in nats
    assert entry["loss"] == pytest.approx(entry["triplet"] + entry["quantization"] - entry["entropy"], abs=1e-4)
