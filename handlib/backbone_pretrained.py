"""MediaPipe's pretrained hand landmark network as the image encoder of f_E2D (``backbone="mediapipe"``).

Baek et al. 2019 pretrain their 2D evidence network on real images (Sec. 3.1); handlib's ResNets
(``backbone.py``) start from scratch. This module is the other route: Google's hand landmark network
(MediaPipe ``hand_landmark_full``, Apache-2.0, read from ``hand_landmarker.task`` by
:mod:`handlib.tflite`) as a drop-in for :class:`~handlib.backbone.ResNet` — same call, same
:class:`~handlib.backbone.BackboneOutput`, so ``ModelConfig(backbone="mediapipe")`` puts the keypoint
head and the regressor on pretrained features:

* ``pooled`` F(x): the network's own 1152-d global average feature, the input of all its heads
  (equal to ``HandLandmarkNet.feature`` of :mod:`handlib.pretrained`);
* ``features``: the 1152×7×7 map it averages;
* ``maps``: four intermediate tensors at strides 4, 8, 16, 32, for the heat-map head.

The network is a MobileNetV2-like stack of inverted residual blocks (1×1 expand + ReLU6, 3×3
depthwise + ReLU6, 1×1 project, add). The four maps are found by shape (:func:`stride_taps`): for
each stride, the **last tensor in execution order with that spatial size**. At 224 px that gives

    stride  map     channels  tensor (operator index in hand_landmark_full)
    4       56×56   144       1×1 expansion + ReLU6 that feeds the stride-2 depthwise conv (op 10)
    8       28×28   240       the same, one resolution down (op 17)
    16      14×14   672       the same (op 39)
    32      7×7     1152      last depthwise conv + ReLU6: the map fed to global pooling (op 55)

i.e. the widest, most processed features at each resolution (the block outputs after the ADDs at
the same sizes are thinner: 24, 40, 112, 192 channels). ``maps[3] is features``, as for the ResNet.

Inputs: handlib's crops are normalised with ImageNet statistics (``data.batch.normalize_image``);
MediaPipe was trained on RGB in [0, 1], so forward first undoes it, x·std + mean (no clamp: an exact
inverse with a gradient everywhere). Weights: every constant of the file is a float32 trainable
``Parameter``, the four heads' too (landmarks, presence, handedness, world; the DHPE ignores them,
their landmarks come out as a by-product). Freezing is a training decision, not this module's. The
file has no BatchNorm (folded into the convs at export), so ``backbone.fold_batchnorm`` returns an
unchanged copy.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .backbone import STRIDES, BackboneOutput
from .checks import check_shape
from .pretrained import LANDMARK_MEMBER, read_task_member
from .tflite import TFLiteGraph, TFLiteModule, load_tflite

__all__ = ["MediaPipeBackbone", "MediaPipeOutput", "stride_taps", "IMAGE_SIZE", "FEATURE_DIM"]

IMAGE_SIZE = 224  # the landmark network's input side: the only one it was trained at
FEATURE_DIM = 1152  # length of its pooled feature F(x)


@dataclasses.dataclass(frozen=True)
class MediaPipeOutput(BackboneOutput):
    """:class:`~handlib.backbone.BackboneOutput` plus the network's own 2D landmarks.

    landmarks: (B, 21, 2) x, y in crop pixels, handlib's convention (pixel centres at integers, i.e.
    MediaPipe's output − ½), handlib keypoint order; z and the other heads are dropped.
    """

    landmarks: torch.Tensor


def stride_taps(graph: TFLiteGraph, strides=STRIDES) -> tuple[int, ...]:
    """Tensor indices of the maps fed to the keypoint head: per stride s, the last rank-4 operator
    output (in execution order) of spatial size S/s, S the graph's input side.

    Args:
        graph: a parsed TFLite graph with one NHWC image input.
        strides: output strides, e.g. (4, 8, 16, 32).
    Returns:
        one tensor index into ``graph.tensors`` per stride.
    """
    side = graph.tensors[graph.inputs[0]].shape[1]
    last = {}
    for op in graph.ops:
        shape = graph.tensors[op.outputs[0]].shape
        if len(shape) == 4 and shape[1] == shape[2] and side % shape[1] == 0:
            last[side // shape[1]] = op.outputs[0]  # later ops overwrite earlier ones
    missing = [s for s in strides if s not in last]
    if missing:
        raise ValueError(f"{graph.source}: no {side}/{missing[0]} map in the graph (strides {sorted(last)})")
    return tuple(last[s] for s in strides)


class MediaPipeBackbone(nn.Module):
    """MediaPipe's hand landmark network with :class:`~handlib.backbone.ResNet`'s interface.

    ``MediaPipeBackbone.from_task()`` reads it from the cached ``hand_landmarker.task``.

    Args:
        net: the :class:`~handlib.tflite.TFLiteModule` of ``hand_landmarks_detector.tflite``.
        cpu_chunk: on CPU, run batches larger than this that many images at a time (their activations
            then stay in cache; see ``pretrained.HandLandmarkNet``). None: never split.

    Attributes:
        out_dim: 1152, the length of ``pooled``.
        map_channels: channels of ``maps[0..3]``: (144, 240, 672, 1152) for hand_landmark_full.
        map_names: the graph tensors tapped for ``maps`` (see the module docstring).
    """

    def __init__(self, net: TFLiteModule, cpu_chunk: int | None = 4):
        super().__init__()
        self.net, self.cpu_chunk = net, cpu_chunk
        g = net.graph
        if g.tensors[g.inputs[0]].shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"{g.source}: input {g.tensors[g.inputs[0]].shape}, expected a "
                             f"{IMAGE_SIZE}×{IMAGE_SIZE} RGB landmark network")
        maps = stride_taps(g)
        pool = next(op for op in g.ops if op.type == "MEAN")  # global average pooling → every head
        if pool.inputs[0] != maps[-1] or g.tensors[pool.outputs[0]].shape[-1] != FEATURE_DIM:
            raise ValueError(f"{g.source}: the pooled map is not the last 7×7 map: an unexpected model")
        self.map_names = tuple(g.tensors[i].name for i in maps)
        self.map_channels = tuple(g.tensors[i].shape[3] for i in maps)
        self.pooled_name = g.tensors[pool.outputs[0]].name
        outputs = [g.tensors[i].name for i in g.outputs]
        self.landmark_output = outputs.index("Identity")  # (B, 63): 21 × (x, y, z) in crop pixels
        from .data.batch import image_stats  # the statistics of normalize_image (lazy: data/ is heavy)

        mean, std = image_stats()  # (1, 3, 1, 1) each
        self.register_buffer("mean", mean, persistent=False)  # constants, not weights
        self.register_buffer("std", std, persistent=False)

    @classmethod
    def from_task(cls, path=None, cpu_chunk: int | None = 4) -> MediaPipeBackbone:
        """Read ``hand_landmarks_detector.tflite`` from a .task (default: the cache).

        Raises:
            FileNotFoundError: naming ``path`` when the file is absent.
        """
        data, label = read_task_member(path, LANDMARK_MEMBER)
        return cls(load_tflite(data, label), cpu_chunk)

    def scope_parameters(self, scope: str) -> list[nn.Parameter]:
        """The weights a training stage may change (``TrainConfig.finetune``), in a fixed order.

        Args:
            scope: ``"all"``; ``"top"`` the stride-32 blocks (every op after the stride-16 map) and
                the heads; ``"heads"`` the fully connected heads after global pooling (landmarks,
                presence, handedness, world); ``"none"``.
        Returns:
            the Parameters of the ops from the scope's first op on (constants included).
        """
        writer = {t: k for k, t in enumerate(self.net.writes)}  # tensor index → the op writing it
        names = self.net.names
        first = {"all": 0, "top": writer[names[self.map_names[2]]] + 1,
                 "heads": writer[names[self.pooled_name]] + 1, "none": len(self.net.layers)}
        if scope not in first:
            raise ValueError(f"scope: expected one of {sorted(first)}, got {scope!r}")
        start = first[scope]
        params = [p for layer in self.net.layers[start:] for p in layer.parameters()]
        reads = sorted({i for r in self.net.reads[start:] for i in r})
        return params + [self.net.consts[f"t{i}"] for i in reads if f"t{i}" in self.net.consts]

    @property
    def out_dim(self) -> int:
        """Length of ``pooled`` F(x): 1152."""
        return self.map_channels[-1]

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (b, 3, 224, 224) RGB in [0, 1] → (raw landmarks (b, 63), pooled, maps[0..3])."""
        names = (self.pooled_name,) + self.map_names
        outs, taps = self.net(x, taps=names)
        return (outs[self.landmark_output],) + tuple(taps[n] for n in names)

    def forward(self, x: torch.Tensor) -> MediaPipeOutput:
        """Args:
            x: (B, 3, 224, 224) crop normalised with ImageNet statistics (``normalize_image``).
        Returns:
            :class:`MediaPipeOutput`: features (B, 1152, 7, 7), pooled (B, 1152), maps at strides
            4, 8, 16, 32 of shapes (B, C_i, 224/s_i, 224/s_i), landmarks (B, 21, 2).
        """
        check_shape(x, "x", ("B", 3, IMAGE_SIZE, IMAGE_SIZE))
        rgb = x * self.std.to(x.dtype) + self.mean.to(x.dtype)  # undo normalize_image: [0, 1] RGB
        if x.device.type == "cpu" and self.cpu_chunk and len(x) > self.cpu_chunk:
            parts = [self._run(c) for c in rgb.split(self.cpu_chunk)]
            outs = [torch.cat(p) for p in zip(*parts)]
        else:
            outs = self._run(rgb)
        raw, pooled, maps = outs[0], outs[1], tuple(outs[2:])
        landmarks = raw.reshape(len(x), 21, 3)[..., :2] - 0.5  # MediaPipe's 0 = left edge → centres at 0
        return MediaPipeOutput(features=maps[-1], pooled=pooled, maps=maps, landmarks=landmarks)

