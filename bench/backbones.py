"""Image backbones for the deep methods, chosen by a Config field (``backbone``, ``weights``).

- ``small_cnn``: three conv blocks and a 512-unit layer on 32 x 32 inputs, trained from scratch. The default: the
  papers fine-tune ImageNet-pretrained nets, and no pretrained weights are available offline.
- ``alexnet``, ``vgg16``: torchvision's networks without their last (1000-way) layer, 4096-d features.
- ``resnet50``: torchvision's ResNet-50 without its classifier, the 2048-d globally pooled features (the ResNet-50
  of HashNet's and CSQ's code).
- ``vit_b_16``: torchvision's ViT-B/16 without its head, the 768-d class token after the last encoder layer and
  its layer norm; it takes only 224 x 224 inputs.

The ImageNet backbones (all but the small CNN) take 224 x 224 ImageNet-normalised RGB inputs (grey images are
repeated to three channels). ``weights`` takes a torchvision weights name (``IMAGENET1K_V1``, downloaded by
torchvision) or a state-dict file (torchvision's parameter names), for users who have them; empty, the offline
default, means a random initialisation, trained from scratch. Records hold the config, so a table says which.

A backbone owns its preprocessing: ``prepare`` turns the harness's uint8 images into the float inputs it expects,
on the device, so augmentations can be applied between ``prepare`` and ``forward``. Input sizes, as the toolkits
(DeepHash-pytorch, FIRe, HashNet) feed their networks: images larger than 224 are taken as the toolkits'
Resize(256) stage and their central 224/256 is cropped (exactly the central 224 x 224 of a 256 x 256 image:
CenterCrop(224) at test time); smaller ones (the 32 x 32 sets, 64 x 64 NUS-WIDE of Cao et al.) are resized to 224,
as the toolkits resize CIFAR-10. In training, ``augment`` crops a random 224 x 224 window of a 256 x 256 image and
mirrors it with probability 1/2 (RandomCrop(224) + RandomHorizontalFlip); for smaller images it crops the prepared
224 input and resizes the crop back (``bench.deep.random_crop_flip``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.deep import batched, random_crop_flip, to_float, train_hash_network
from bench.errors import BenchError, unknown
from bench.method import FitContext, Method, binarize

INPUT_SIZE = {"small_cnn": 32, "alexnet": 224, "vgg16": 224, "resnet50": 224, "vit_b_16": 224}  # square side
BACKBONES = tuple(INPUT_SIZE)
FEATURES = {"small_cnn": 512, "alexnet": 4096, "vgg16": 4096, "resnet50": 2048, "vit_b_16": 768}
RESIZE = 256  # the toolkits' Resize(256) before their 224 crops: a larger input is taken as that stage
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CPU_BATCH = 128  # images a batch when encoding on the CPU (``HashNetwork.outputs``)


class Backbone(nn.Module):
    """uint8 images (n, c, h, w) -> ``prepare`` -> float inputs -> ``forward`` -> features (n, ``dim``)."""

    def __init__(self, name: str, channels: int, weights: str = ""):
        super().__init__()
        if name not in BACKBONES:
            raise unknown("backbone", name, BACKBONES)
        self.name, self.channels, self.size = name, channels, INPUT_SIZE[name]
        model = None  # the torchvision model whose layers self.net reuses (its names match named weights)
        if name == "small_cnn":
            self.imagenet, self.dim = False, 512

            def block(a, b):
                return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]

            self.net = nn.Sequential(
                *block(channels, 32),
                *block(32, 64),
                *block(64, 128),
                nn.Flatten(),
                nn.Linear(128 * 4 * 4, self.dim),
                nn.ReLU(),
            )
        else:
            import torchvision

            model = getattr(torchvision.models, name)(weights=None)
            self.imagenet, self.dim = True, FEATURES[name]
            if name in ("alexnet", "vgg16"):
                # features -> pooling -> classifier without its 1000-way layer (fc7 features, as DeCAF7 / DeepBit)
                self.net = nn.Sequential(model.features, model.avgpool, nn.Flatten(), *list(model.classifier)[:-1])
            else:
                # the model itself with its classifier an identity: ResNet's pooled features, ViT's class token
                setattr(model, "fc" if name == "resnet50" else "heads", nn.Identity())
                self.net = model
        if weights:
            load_weights(self.net, model, name, weights)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (n, c, h, w), or float images in [-1, 1] (a generator's), -> float inputs: [-1, 1] for the small
        CNN; ImageNet-normalised RGB for the others; at the backbone's input size. An ImageNet backbone takes a uint8
        image larger than its input as the toolkits' Resize(256) output and crops its central size/256 (the central
        224 x 224 of a 256 x 256 image), resizing only if that is not already 224; smaller ones are resized."""
        if x.dtype == torch.uint8:
            if self.imagenet and max(x.shape[-2:]) > self.size:
                h, w = x.shape[-2:]
                ch, cw = round(h * self.size / RESIZE), round(w * self.size / RESIZE)
                top, left = round((h - ch) / 2), round((w - cw) / 2)  # torchvision's CenterCrop
                x = x[..., top : top + ch, left : left + cw]
            out = to_float(x, self.size)
        else:
            out = (
                x
                if tuple(x.shape[-2:]) == (self.size, self.size)
                else F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            )
            out = out.clone() if self.imagenet else out
        return self._normalise(out) if self.imagenet else out

    def augment(self, x: torch.Tensor, generator: torch.Generator, crop: float = 0.875, flip: bool = True):
        """Training inputs of uint8 images, cropped at random (a square of ``crop`` of each side at a random
        position) and mirrored with probability 1/2 when ``flip``. For an ImageNet backbone and images larger than
        its input, the crop is cut from the image itself at whole-pixel offsets, the toolkits' RandomCrop(224) of
        a 256 x 256 image (resized to 224 only when ``crop`` x side is not 224); otherwise it is
        ``random_crop_flip`` of the prepared input (resized back to the input size). Draws from ``generator``."""
        if not (self.imagenet and x.dtype == torch.uint8 and max(x.shape[-2:]) > self.size):
            return random_crop_flip(self.prepare(x), generator, crop, flip)
        n, _, h, w = x.shape
        ch, cw = max(1, round(crop * h)), max(1, round(crop * w))
        top = torch.randint(0, h - ch + 1, (n,), generator=generator).tolist()
        left = torch.randint(0, w - cw + 1, (n,), generator=generator).tolist()
        mirror = (torch.rand(n, generator=generator) < 0.5) & flip
        patches = torch.stack([x[i, :, t : t + ch, lo : lo + cw] for i, (t, lo) in enumerate(zip(top, left))])
        patches = torch.where(mirror.to(x.device)[:, None, None, None], patches.flip(-1), patches)
        return self._normalise(to_float(patches, self.size))

    @staticmethod
    def _normalise(out: torch.Tensor) -> torch.Tensor:
        """Floats in [-1, 1] -> ImageNet-normalised RGB (grey repeated to three channels)."""
        out = out.add_(1).div_(2)  # [0, 1], then ImageNet's normalisation
        if out.shape[1] == 1:
            out = out.expand(-1, 3, -1, -1)
        mean = torch.tensor(IMAGENET_MEAN, device=out.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=out.device).view(1, 3, 1, 1)
        return (out - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_weights(net: nn.Module, model, name: str, weights: str) -> None:
    """Fill ``net`` from a state-dict file, or from torchvision's named weights of ``model`` (its layers are
    ``net``'s, so the names match). Keys of the dropped last layer are ignored; nothing matching is an error."""
    path = Path(weights).expanduser()
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BenchError(f"cannot read backbone weights {path}: {type(e).__name__}: {e}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        target = model if model is not None else net
    elif model is not None:
        import torchvision

        enum = torchvision.models.get_model_weights(name)
        choices = [w.name for w in enum]
        if weights.split(".")[-1] not in choices:
            raise BenchError(
                f"backbone weights {weights!r} is neither a file nor a torchvision weights name of "
                f"{name} (choices: {', '.join(choices)}, or a path to a state-dict file)"
            )
        try:
            state = enum[weights.split(".")[-1]].get_state_dict(progress=False)
        except Exception as e:  # no network, no cache
            raise BenchError(
                f"cannot obtain torchvision weights {name} {weights}: {type(e).__name__}: {e}; download "
                f"them where there is a network, or pass a state-dict file"
            ) from None
        target = model
    else:
        raise BenchError(f"backbone weights {weights!r}: no such file (the {name} backbone has no named weights)")
    if not set(state) & set(target.state_dict()):
        raise BenchError(f"backbone weights {weights!r}: no parameter name matches the {name} backbone")
    target.load_state_dict(state, strict=False)


ACTIVATIONS = ("sigmoid", "tanh", "linear")


class HashNetwork(nn.Module):
    """A backbone and a new K-unit layer: F(x) = activation(W f(x) + b), the architecture of every deep hashing
    method here (sigmoid: DeepBit, UTH, DNNH; tanh: HashGAN's encoder; linear: HashNet, DHN and CNNH, which apply
    their own squashing in the loss). With ``freeze`` only the new layer learns: the trunk stays in eval mode and
    runs without a backward pass."""

    def __init__(
        self, backbone: str, channels: int, weights: str, n_bits: int, freeze: bool = False, activation: str = "sigmoid"
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise unknown("activation", activation, ACTIVATIONS)
        self.backbone, self.freeze, self.activation = Backbone(backbone, channels, weights), freeze, activation
        self.layer = nn.Linear(self.backbone.dim, n_bits)

    def trainable(self) -> list:
        return list(self.layer.parameters()) + ([] if self.freeze else list(self.backbone.parameters()))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """F of inputs already ``prepare``d (so augmentations can come in between)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            features = self.backbone(inputs)
        z = self.layer(features)
        return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda v: v}[self.activation](z)

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """F of uint8 images, in eval mode and in batches: on the CPU batches of ``CPU_BATCH``, whose activations
        stay in cache (the small CNN encodes twice as fast as in batches of 2,048)."""
        self.eval()
        size = CPU_BATCH if x.device.type == "cpu" else 2048
        return batched(lambda part: self(self.backbone.prepare(part)), x, size)


class DeepHashMethod(Method):
    """The shape of the deep methods built on one ``HashNetwork`` F (``network``). The supervised ones (HashNet,
    DHN, DNNH, CNNH) share everything else too: a Config built on ``bench.deep.SupervisedConfig``, training by
    ``bench.deep.train_hash_network`` with the method's loss (``batch_loss``), codes sign(F(x)); their files hold
    only the loss. DeepBit, UTH and HashGAN (Cao) bring their own ``fit`` and ``encode``."""

    input = "images"
    smoke = {"iterations": 40, "batch_size": 32}
    activation = "linear"  # F's output squashing; the supervised losses apply their own

    def network(self, x: torch.Tensor) -> HashNetwork:
        """A fresh F for images like ``x``, on the run's device; its initial weights come from torch's global
        generator, which the runner seeds with the run seed around fit. A Config with ``freeze_backbone`` trains
        only the new layer."""
        c = self.config
        return HashNetwork(
            c.backbone, x.shape[1], c.weights, self.n_bits, getattr(c, "freeze_backbone", False), self.activation
        ).to(self.device)

    def batch_loss(self, y: torch.Tensor, generator: torch.Generator):
        """The loss of a batch: a function (outputs, training indices, step) -> (loss, {term: value})."""
        raise NotImplementedError

    def fit(self, x, y=None, context=FitContext()):
        y = self.check_labels(y)
        g = self.generator()
        self.net_ = self.network(x)
        self.training_ = train_hash_network(self.name, self.net_, x, self.config, g, self.batch_loss(y, g))
        return self

    def encode(self, x):
        self.check_fitted("net_")
        return binarize(self.net_.outputs(x))
