"""ResNet feature extractor: the image encoder in front of the 2D evidence estimator f_E2D.

Baek et al. 2019 (Sec. 3.2, Sec. 4) encode a 224×224 RGB crop with a ResNet-50 (He et al. 2016):
its global-average-pooled 2048-d vector is the feature F(x) fed to the mesh regressor, and its
convolutional maps feed the 2D keypoint head (``handlib.heatmaps.KeypointHead``).

The network is written here (no torchvision, no pretrained weights) and follows torchvision's
architecture exactly — 7×7 stride-2 stem, 3×3 stride-2 max-pool, four stages, BatchNorm, stride on
the 3×3 conv of a bottleneck ("ResNet v1.5") — so parameter counts match torchvision's without the
fc layer. ``resnet_tiny`` is a narrow ResNet-10 for the ``ci`` profile.

Output maps, for an input of side S: ``maps[0..3]`` are the outputs of layer1..layer4 at strides
4, 8, 16, 32 (S/4 … S/32). The heat-map head picks the one closest to the heat-map resolution,
e.g. stride 4 at 64 px → 16×16 (``ci``), stride 8 at 224 px → 28×28 resized to 32×32 (paper).

``build_backbone("mediapipe")`` instead returns MediaPipe's pretrained hand landmark network with the
same interface (:class:`~handlib.backbone_pretrained.MediaPipeBackbone`, 224 px crops only, F(x)
1152-d); :data:`PRETRAINED` lists such file-backed backbones by name.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .backbone_pretrained import MediaPipeBackbone

__all__ = ["BackboneConfig", "BackboneOutput", "BasicBlock", "Bottleneck", "ResNet", "build_backbone",
           "resnet18", "resnet34", "resnet50", "resnet_tiny", "BACKBONES", "fold_batchnorm",
           "PretrainedSpec", "PRETRAINED", "check_image_size"]

STRIDES = (4, 8, 16, 32)  # output stride of layer1..layer4


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Architecture of one ResNet; ``BACKBONES`` holds the named ones used by the profiles."""

    name: str  # profile name: "resnet50" (paper), "resnet18" (cpu), "resnet_tiny" (ci)
    block: str = "basic"  # "basic" (two 3×3 convs) or "bottleneck" (1×1, 3×3, 1×1; ×4 expansion)
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)  # residual blocks per stage (He et al. Table 1)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # stage widths before expansion
    in_channels: int = 3  # RGB; 4 would allow an extra mask/depth channel
    zero_init_residual: bool = False  # γ=0 in each branch's last BN: blocks start as identity
    # (Goyal et al. 2017); off by default, as in torchvision


BACKBONES = {
    "resnet_tiny": BackboneConfig("resnet_tiny", "basic", (1, 1, 1, 1), (16, 32, 64, 128)),
    "resnet18": BackboneConfig("resnet18", "basic", (2, 2, 2, 2)),
    # ResNet-18 depth at half width (F 256-d, ~¼ of the FLOPs): the cpu profile's budget backbone
    "resnet18_half": BackboneConfig("resnet18_half", "basic", (2, 2, 2, 2), (32, 64, 128, 256)),
    "resnet34": BackboneConfig("resnet34", "basic", (3, 4, 6, 3)),
    "resnet50": BackboneConfig("resnet50", "bottleneck", (3, 4, 6, 3)),
}


@dataclasses.dataclass(frozen=True)
class PretrainedSpec:
    """A backbone read from a pretrained file rather than built from a :class:`BackboneConfig`."""

    out_dim: int  # length of the pooled F(x)
    image_size: int  # the one crop side it takes: the side it was trained at


PRETRAINED = {
    # MediaPipe's hand landmark network (backbone_pretrained.MediaPipeBackbone), trained on 224 px crops
    "mediapipe": PretrainedSpec(out_dim=1152, image_size=224),
}


def check_image_size(name: str, image_size: int) -> None:
    """Raise ``ValueError`` if backbone ``name`` cannot take S×S crops (pretrained ones take one S)."""
    spec = PRETRAINED.get(name)
    if spec is not None and image_size != spec.image_size:
        raise ValueError(f"image_size: backbone {name!r} was trained on {spec.image_size}×{spec.image_size} "
                         f"crops and takes only those; got image_size={image_size}")


@dataclasses.dataclass(frozen=True)
class BackboneOutput:
    """features: (B, C, H/32, W/32) layer4 map; pooled: (B, C) F(x), the global-average-pooled
    feature (C=2048 for resnet50, the paper's feature vector); maps: layer1..4 outputs at strides
    4, 8, 16, 32, shapes (B, C_i, H/s_i, W/s_i)."""

    features: torch.Tensor
    pooled: torch.Tensor
    maps: tuple[torch.Tensor, ...]


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs plus identity (He et al. 2016, Fig. 2); used by ResNet-18/34."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carries the stride, "v1.5"), 1×1 expand ×4 (He et al. 2016, Fig. 5)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(cin, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, width * 4), nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """ResNet body without classifier: stem, max-pool, layer1..layer4, global average pool.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        widths: stage widths before block expansion.
        in_channels: input channels (3 for RGB).
        zero_init_residual: set γ=0 in the last BN of each residual branch.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers, widths=(64, 128, 256, 512),
                 in_channels: int = 3, zero_init_residual: bool = False):
        super().__init__()
        self.in_channels = in_channels
        stem = widths[0]
        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin, stages = stem, []
        for i, (n, w) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != w * block.expansion:  # projection shortcut (option B)
                down = nn.Sequential(conv1x1(cin, w * block.expansion, stride),
                                     nn.BatchNorm2d(w * block.expansion))
            blocks = [block(cin, w, stride, down)]
            cin = w * block.expansion
            blocks += [block(cin, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.map_channels = tuple(w * block.expansion for w in widths)  # channels of maps[0..3]
        self._init_weights(zero_init_residual)

    def scope_parameters(self, scope: str) -> list[nn.Parameter]:
        """The weights a training stage may change (``TrainConfig.finetune``): ``"all"``, ``"top"``
        (the last stage, ``layer4``), ``"heads"`` or ``"none"`` (a ResNet has no heads: nothing)."""
        scopes = {"all": self, "top": self.layer4, "heads": None, "none": None}
        if scope not in scopes:
            raise ValueError(f"scope: expected one of {sorted(scopes)}, got {scope!r}")
        return [] if scopes[scope] is None else list(scopes[scope].parameters())

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 init, as torchvision
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    @property
    def out_dim(self) -> int:
        """Length of ``pooled`` F(x): 2048 for ResNet-50, 512 for ResNet-18/34."""
        return self.map_channels[-1]

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Args:
            x: (B, in_channels, H, W) normalised image; H, W multiples of 32 give exact strides.
        Returns:
            :class:`BackboneOutput` with features (B, C, H/32, W/32), pooled (B, C),
            maps at strides 4, 8, 16, 32.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] < 32 or x.shape[-2] < 32:
            raise ValueError(f"x: H and W must be at least 32 (total stride), got {tuple(x.shape)}")
        h = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # stride 4
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            h = layer(h)
            maps.append(h)
        pooled = h.mean(dim=(2, 3))  # (B, C) global average pool: F(x)
        return BackboneOutput(features=h, pooled=pooled, maps=tuple(maps))


def resnet_from_config(cfg: BackboneConfig) -> ResNet:
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[cfg.block]
    return ResNet(block, cfg.layers, cfg.widths, cfg.in_channels, cfg.zero_init_residual)


def resnet18(**kw) -> ResNet:
    """ResNet-18 body, 11,176,512 parameters (torchvision's 11,689,512 minus fc)."""
    return resnet_from_config(dataclasses.replace(BACKBONES["resnet18"], **kw))


def resnet34(**kw) -> ResNet:
    """ResNet-34 body, 21,284,672 parameters."""
    return resnet_from_config(dataclasses.replace(BACKBONES["resnet34"], **kw))


def resnet50(**kw) -> ResNet:
    """ResNet-50 body, 23,508,032 parameters; pooled F(x) is 2048-d (the paper's encoder)."""
    return resnet_from_config(dataclasses.replace(BACKBONES["resnet50"], **kw))


def resnet_tiny(**kw) -> ResNet:
    """Narrow ResNet-10 (one BasicBlock per stage, widths 16..128) for the ``ci`` profile."""
    return resnet_from_config(dataclasses.replace(BACKBONES["resnet_tiny"], **kw))


def build_backbone(name: str, **kw) -> ResNet | MediaPipeBackbone:
    """Build the backbone named by a profile (``profile().backbone``); ``kw`` overrides
    :class:`BackboneConfig` fields, e.g. ``in_channels=4``. ``"mediapipe"`` reads MediaPipe's
    pretrained network from its .task file instead (``kw``: ``MediaPipeBackbone.from_task``'s)."""
    if name == "mediapipe":
        from .backbone_pretrained import MediaPipeBackbone  # lazy: it imports this module

        return MediaPipeBackbone.from_task(**kw)
    if name not in BACKBONES:
        raise ValueError(f"name: unknown backbone {name!r}, expected one of "
                         f"{sorted(BACKBONES) + sorted(PRETRAINED)}")
    return resnet_from_config(dataclasses.replace(BACKBONES[name], **kw))


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` for *frozen inference* with every BatchNorm folded into the conv before it.

    In eval mode BN is the affine map y = γ (z − μ)/√(σ² + ε) + β per channel, so
    conv-then-BN is one conv with weights W·γ/√(σ² + ε) and bias β − μγ/√(σ² + ε): the same
    outputs (to float rounding) with a third fewer memory passes, forward and backward. Used by
    test-time refinement (Eq. 13), which runs the frozen backbone 50 times per image. Pairs are
    found by name (``convK`` with ``bnK`` in one module, and ``Sequential(conv, bn)`` shortcuts),
    which covers :class:`ResNet`; the folded BNs become ``nn.Identity``. A module without BatchNorm
    (``MediaPipeBackbone``: its BNs were folded when the file was exported) comes back as an eval-mode
    copy with the same weights.

    Args:
        net: a module whose BNs follow their convs as above (its running statistics are used).
    Returns:
        a folded deep copy in eval mode; ``net`` is unchanged.
    """
    import copy

    net = copy.deepcopy(net).eval()

    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)

    for module in list(net.modules()):
        children = dict(module.named_children())
        for name, child in children.items():
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = children.get("conv" + name[2:])
                if isinstance(conv, nn.Conv2d):
                    fold(conv, child)
                    setattr(module, name, nn.Identity())
        if isinstance(module, nn.Sequential):
            items = list(module)
            for i in range(len(items) - 1):
                if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                    fold(items[i], items[i + 1])
                    module[i + 1] = nn.Identity()
    return net
