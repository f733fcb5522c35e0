"""Read a TensorFlow Lite flatbuffer into a PyTorch module of ordinary layers (trainable, NCHW).

A ``.tflite`` file is data: a flatbuffer (schema: the ``tflite`` package) holding tensors (name,
shape, type, constant bytes) and a list of operators wired by tensor index. :func:`load_tflite`
reads it — nothing in the file is executed — and builds a :class:`TFLiteModule` whose layers are
``nn.Conv2d``, ``nn.Linear``, ``nn.PReLU`` … with every float constant a float32 ``Parameter``,
so the pretrained network can be fine-tuned and differentiated like any handlib module.

Conventions reproduced exactly (and tested against the ``ai-edge-litert`` interpreter):

* **layout**: TFLite is NHWC; inside the module every rank-4 tensor is NCHW (torch's), so inputs
  and rank-4 outputs are NCHW; RESHAPE / FULLY_CONNECTED flatten in TFLite's NHWC order;
* **SAME padding** pads ``total = max((out − 1)·stride + eff_k − in, 0)`` with ``total // 2`` at
  the start and the rest at the end (more at the end, unlike torch's symmetric ``padding``);
* **RESIZE_BILINEAR**: ``half_pixel_centers`` (src = (dst + ½)·in/out − ½), ``align_corners``
  (src = dst·(in − 1)/(out − 1)) and the legacy mode (src = dst·in/out), clamped at the border;
* **fused activations** (RELU, RELU_N1_TO_1, RELU6, TANH) after CONV/FC/ADD/POOL/CONCATENATION;
* **DEQUANTIZE** of float16 constants is folded to float32 at load (the weights of MediaPipe's
  models are stored as float16); integer-quantized tensors are refused with a clear error;
* the batch dimension (0) may be any size, although the file fixes it at 1.

Reading the file (tensors, constants, operators, float16 DEQUANTIZE folded) is
:mod:`handlib.tflite_graph`; this module turns its graph into layers. Supported ops: see
:data:`SUPPORTED_OPS`. Anything else, or a malformed / truncated file, raises :class:`TFLiteError`
naming the op (with its operator index) or the problem, and the file.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tflite_graph import (
    SUPPORTED_OPS,
    OpInfo,
    TensorInfo,
    TFLiteError,
    TFLiteGraph,
    read_tflite,
)

_ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}  # fused activation codes
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}  # TFLite axis of a rank-4 tensor → internal NCHW axis

__all__ = ["TFLiteError", "TensorInfo", "OpInfo", "TFLiteGraph", "TFLiteModule", "read_tflite",
           "load_tflite", "same_padding", "resize_bilinear", "fused_activation", "SUPPORTED_OPS"]


# ----------------------------------------------------------------------------------------------
# Pure functions: the conventions
# ----------------------------------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite/TensorFlow SAME padding of one axis: (before, after), the odd pixel going *after*.

    Output size is ``ceil(size / stride)``; e.g. size 224, kernel 3, stride 2 → (0, 1), where
    torch's symmetric ``padding=1`` would shift the sampling grid by one pixel.
    """
    out = -(-size // stride)
    eff = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def fused_activation(x: torch.Tensor, code: int | str | None, inplace: bool = False) -> torch.Tensor:
    """Apply TFLite's fused activation (ActivationFunctionType code or name) to ``x``.

    ``inplace`` overwrites ``x``: right for an op's fresh output (conv, add …), whose backward does not
    need it, and it spares a (B, C, H, W) allocation per layer (measured: a quarter of the forward
    time at batch 32 went to allocating and filling activation outputs).
    """
    name = _ACTIVATIONS.get(code, code) if isinstance(code, int) else code
    if name is None or name == "NONE":
        return x
    if name == "RELU":
        return F.relu(x, inplace=inplace)
    if name == "RELU6":
        return F.hardtanh(x, 0.0, 6.0, inplace=inplace)
    if name == "RELU_N1_TO_1":
        return F.hardtanh(x, -1.0, 1.0, inplace=inplace)
    if name == "TANH":
        return x.tanh_() if inplace else torch.tanh(x)
    raise TFLiteError(f"unsupported fused activation {code!r}")


def _source_coords(out: int, size: int, align_corners: bool, half_pixel: bool, like: torch.Tensor):
    """Per output index along one axis: lower index, upper index, weight of the upper one."""
    d = torch.arange(out, dtype=like.dtype, device=like.device)
    if align_corners and out > 1:
        src = d * ((size - 1) / (out - 1))
    elif half_pixel:
        src = ((d + 0.5) * (size / out) - 0.5).clamp_min(0.0)
    else:
        src = d * (size / out)
    lo = src.floor()
    w = src - lo
    lo = lo.long().clamp(0, size - 1)
    return lo, (lo + 1).clamp_max(size - 1), w


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], align_corners: bool = False,
                    half_pixel_centers: bool = False) -> torch.Tensor:
    """TFLite's RESIZE_BILINEAR on an NCHW tensor, all three sampling conventions.

    Args:
        x: (B, C, H, W). size: (H', W') output size. align_corners, half_pixel_centers: the op's
            options (TFLite forbids both true).
    Returns:
        (B, C, H', W'): a separable blend of the two neighbours of each source coordinate.
    """
    (y0, y1, wy), (x0, x1, wx) = (_source_coords(size[0], x.shape[2], align_corners, half_pixel_centers, x),
                                  _source_coords(size[1], x.shape[3], align_corners, half_pixel_centers, x))
    rows = x[:, :, y0] * (1 - wy)[:, None] + x[:, :, y1] * wy[:, None]  # (B, C, H', W)
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx



# ----------------------------------------------------------------------------------------------
# Layers (internal layout: NCHW for rank-4 tensors, TFLite's own otherwise)
# ----------------------------------------------------------------------------------------------
def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _to_internal(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


class Conv(nn.Module):
    """CONV_2D / DEPTHWISE_CONV_2D: ``nn.Conv2d`` with TFLite's SAME padding and fused activation."""

    def __init__(self, conv: nn.Conv2d, same: bool, activation: int):
        super().__init__()
        self.conv, self.same, self.activation = conv, same, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            (kh, kw), (sh, sw), (dh, dw) = self.conv.kernel_size, self.conv.stride, self.conv.dilation
            top, bottom = same_padding(x.shape[2], kh, sh, dh)
            left, right = same_padding(x.shape[3], kw, sw, dw)
            if top == bottom and left == right:  # symmetric: let the convolution pad (no copy)
                return fused_activation(F.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride,
                                                 (top, left), self.conv.dilation, self.conv.groups),
                                        self.activation, inplace=True)
            x = F.pad(x, (left, right, top, bottom))
        return fused_activation(self.conv(x), self.activation, inplace=True)


class MaxPool(nn.Module):
    """MAX_POOL_2D; SAME pads with −inf so that padding never wins the max."""

    def __init__(self, kernel: tuple, stride: tuple, same: bool, activation: int):
        super().__init__()
        self.kernel, self.stride, self.same, self.activation = kernel, stride, same, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride[0])
            left, right = same_padding(x.shape[3], self.kernel[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return fused_activation(F.max_pool2d(x, self.kernel, self.stride), self.activation, inplace=True)


class FullyConnected(nn.Module):
    """FULLY_CONNECTED: flatten in TFLite's NHWC order, then ``nn.Linear``."""

    def __init__(self, linear: nn.Linear, keep_num_dims: bool, activation: int):
        super().__init__()
        self.linear, self.keep_num_dims, self.activation = linear, keep_num_dims, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_nhwc(x)
        if not self.keep_num_dims:
            x = x.reshape(-1, self.linear.in_features)
        return fused_activation(self.linear(x), self.activation, inplace=True)


class Binary(nn.Module):
    """ADD / MUL with broadcasting and a fused activation."""

    def __init__(self, kind: str, activation: int):
        super().__init__()
        self.kind, self.activation = kind, activation

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return fused_activation(a + b if self.kind == "ADD" else a * b, self.activation, inplace=True)


class Unary(nn.Module):
    """LOGISTIC, RELU, RELU6, TANH."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) if self.kind == "LOGISTIC" else fused_activation(x, self.kind)


class Pad(nn.Module):
    """PAD with zeros; ``pads`` already in ``F.pad`` order for the internal layout."""

    def __init__(self, pads: tuple):
        super().__init__()
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


class Reshape(nn.Module):
    """RESHAPE in TFLite's element order, keeping the batch dimension free."""

    def __init__(self, shape: tuple):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _to_nhwc(x).reshape((x.shape[0],) + self.shape[1:])
        return _to_internal(y)


class Concat(nn.Module):
    """CONCATENATION along an (internal) axis, with a fused activation."""

    def __init__(self, axis: int, activation: int):
        super().__init__()
        self.axis, self.activation = axis, activation

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return fused_activation(torch.cat(xs, self.axis), self.activation, inplace=True)


class Mean(nn.Module):
    """MEAN over TFLite axes (rank-4 inputs reduced in NHWC when the rank drops, to keep the order)."""

    def __init__(self, axes: tuple, keep_dims: bool, rank: int):
        super().__init__()
        self.keep_dims = keep_dims
        self.nhwc = rank == 4 and not keep_dims
        self.axes = tuple(axes) if (rank != 4 or self.nhwc) else tuple(_NHWC_TO_NCHW[a] for a in axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (_to_nhwc(x) if self.nhwc else x).mean(self.axes, keepdim=self.keep_dims)


class ResizeBilinear(nn.Module):
    """RESIZE_BILINEAR (see :func:`resize_bilinear`)."""

    def __init__(self, size: tuple, align_corners: bool, half_pixel_centers: bool):
        super().__init__()
        self.size, self.align_corners, self.half_pixel_centers = size, align_corners, half_pixel_centers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_bilinear(x, self.size, self.align_corners, self.half_pixel_centers)


class PReLU(nn.Module):
    """PRELU with a per-channel slope: ``nn.PReLU`` on the channel axis."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.prelu = prelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(x)


# ----------------------------------------------------------------------------------------------
# From operators to layers
# ----------------------------------------------------------------------------------------------
def _const_internal(value: np.ndarray, rank: int) -> torch.Tensor:
    """A float constant operand in the internal layout of a rank-``rank`` result (broadcast-ready)."""
    v = torch.tensor(np.asarray(value, np.float32))
    if rank == 4:
        v = v.reshape((1,) * (4 - v.dim()) + tuple(v.shape)).permute(0, 3, 1, 2)
    return v


def _conv(op: OpInfo, g: TFLiteGraph) -> nn.Module:
    w = g.constants[op.inputs[1]]  # CONV: (O, kh, kw, I); DEPTHWISE: (1, kh, kw, I·multiplier)
    b = g.constants.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    o = op.options
    stride, dil = (o["StrideH"], o["StrideW"]), (o["DilationHFactor"], o["DilationWFactor"])
    if op.type == "CONV_2D":
        weight = w.transpose(0, 3, 1, 2)  # (O, I, kh, kw)
        groups = g.tensors[op.inputs[0]].shape[3] // weight.shape[1]
    else:
        weight = w.transpose(3, 0, 1, 2)  # (I·m, 1, kh, kw); output channel c·m + k reads input c
        groups = g.tensors[op.inputs[0]].shape[3]
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], weight.shape[2:], stride, 0, dil, groups,
                     bias=b is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(np.ascontiguousarray(weight, np.float32)))
        if b is not None:
            conv.bias.copy_(torch.tensor(np.asarray(b, np.float32)))
    return Conv(conv, o["Padding"] == 0, o["FusedActivationFunction"])


def _fully_connected(op: OpInfo, g: TFLiteGraph) -> nn.Module:
    w = g.constants[op.inputs[1]]  # (O, I), already torch's Linear layout
    b = g.constants.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(np.asarray(w, np.float32)))
        if b is not None:
            lin.bias.copy_(torch.tensor(np.asarray(b, np.float32)))
    return FullyConnected(lin, bool(op.options["KeepNumDims"]), op.options["FusedActivationFunction"])


def _prelu(op: OpInfo, g: TFLiteGraph) -> nn.Module:
    alpha = g.constants[op.inputs[1]]
    rank = len(g.tensors[op.inputs[0]].shape)
    channels = g.tensors[op.inputs[0]].shape[-1]
    if rank not in (2, 4) or alpha.size not in (1, channels) or alpha.shape[-1:] not in ((1,), (channels,)):
        raise TFLiteError(f"{g.source}: PRELU (operator {op.index}) with slope shape {alpha.shape} on a "
                          f"rank-{rank} input: only one slope per channel is supported")
    layer = nn.PReLU(alpha.size)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(np.asarray(alpha, np.float32).reshape(-1)))
    return PReLU(layer)


def _layer(op: OpInfo, g: TFLiteGraph) -> tuple[nn.Module, tuple]:
    """The layer for ``op`` and the tensor indices it reads at run time (weights live in the layer)."""
    o, x = op.options, op.inputs[0]
    rank = len(g.tensors[x].shape)
    if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv(op, g), (x,)
    if op.type == "FULLY_CONNECTED":
        return _fully_connected(op, g), (x,)
    if op.type == "PRELU":
        return _prelu(op, g), (x,)
    if op.type in ("ADD", "MUL"):
        return Binary(op.type, o["FusedActivationFunction"]), op.inputs
    if op.type in ("LOGISTIC", "RELU", "RELU6", "TANH"):
        return Unary(op.type), (x,)
    if op.type == "MAX_POOL_2D":
        return MaxPool((o["FilterHeight"], o["FilterWidth"]), (o["StrideH"], o["StrideW"]),
                       o["Padding"] == 0, o["FusedActivationFunction"]), (x,)
    if op.type == "PAD":
        pads = g.constants[op.inputs[1]]  # (rank, 2) before/after per TFLite axis
        axes = [_NHWC_TO_NCHW[a] for a in range(rank)] if rank == 4 else list(range(rank))
        internal = [None] * rank
        for a, dst in enumerate(axes):
            internal[dst] = pads[a]
        return Pad(tuple(int(v) for p in reversed(internal) for v in p)), (x,)  # F.pad: last axis first
    if op.type == "RESHAPE":
        out, inp = g.tensors[op.outputs[0]].shape, g.tensors[x].shape
        if not out or not inp or out[0] != inp[0]:
            raise TFLiteError(f"{g.source}: RESHAPE (operator {op.index}) from {inp} to {out} changes the "
                              "batch dimension: not supported")
        return Reshape(out), (x,)
    if op.type == "CONCATENATION":
        axis = o["Axis"] % rank
        return Concat(_NHWC_TO_NCHW[axis] if rank == 4 else axis, o["FusedActivationFunction"]), op.inputs
    if op.type == "MEAN":
        axes = tuple(int(a) % rank for a in np.atleast_1d(g.constants[op.inputs[1]]))
        return Mean(axes, bool(o["KeepDims"]), rank), (x,)
    if op.type == "RESIZE_BILINEAR":
        size = tuple(int(v) for v in g.constants[op.inputs[1]])
        return ResizeBilinear(size, bool(o["AlignCorners"]), bool(o["HalfPixelCenters"])), (x,)
    raise TFLiteError(f"{g.source}: unsupported op {op.type} (operator {op.index})")  # pragma: no cover


class TFLiteModule(nn.Module):
    """A TFLite graph as a torch module: runs the layers in the file's (topological) order.

    Rank-4 inputs and outputs are NCHW (B, C, H, W); others keep TFLite's layout with a free batch
    dimension. Float constants read by ADD/MUL/CONCATENATION are ``Parameter``s in ``consts``.

    Attributes:
        graph: the parsed :class:`TFLiteGraph` (tensor names and shapes, ops, options).
        layers: one module per operator (DEQUANTIZE folded away).
    """

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.graph = graph
        layers, self.reads, self.writes, consts = [], [], [], {}
        for op in graph.ops:
            layer, reads = _layer(op, graph)
            for i in reads:
                if i in graph.constants and f"t{i}" not in consts:
                    rank = len(graph.tensors[op.outputs[0]].shape)
                    consts[f"t{i}"] = nn.Parameter(_const_internal(graph.constants[i], rank))
            layers.append(layer)
            self.reads.append(tuple(reads))
            self.writes.append(op.outputs[0])
        self.layers = nn.ModuleList(layers)
        self.consts = nn.ParameterDict(consts)
        self.names = {t.name: i for i, t in enumerate(graph.tensors)}
        last = {}
        for k, reads in enumerate(self.reads):
            last.update({i: k for i in reads})
        self._free_after = [[i for i in reads if last[i] == k] for k, reads in enumerate(self.reads)]

    def op_counts(self) -> Counter:
        """How many ops of each type the file holds (after folding DEQUANTIZE)."""
        return Counter(op.type for op in self.graph.ops)

    def forward(self, *inputs: torch.Tensor, taps: tuple = ()):
        """Run the graph.

        Args:
            inputs: one tensor per graph input, rank-4 ones NCHW (B, C, H, W).
            taps: names of intermediate tensors to return too (``graph.tensors[i].name``).
        Returns:
            a tuple of the graph's outputs (in the file's order); with ``taps``, the pair
            (outputs, {name: tensor in the internal layout}).
        """
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"expected {len(self.graph.inputs)} inputs, got {len(inputs)}")
        unknown = [t for t in taps if t not in self.names]
        if unknown:
            raise KeyError(f"{self.graph.source}: no tensor named {unknown[0]!r}")
        keep = set(self.graph.outputs) | {self.names[t] for t in taps}
        env = dict(zip(self.graph.inputs, inputs))
        env.update({int(k[1:]): v for k, v in self.consts.items()})
        for layer, reads, write, free in zip(self.layers, self.reads, self.writes, self._free_after):
            env[write] = layer(*[env[i] for i in reads])
            for i in free:  # drop intermediates once read for the last time (memory at batch 32)
                if i not in keep and i in env and not isinstance(env[i], nn.Parameter):
                    del env[i]
        outs = tuple(env[i] for i in self.graph.outputs)
        return (outs, {t: env[self.names[t]] for t in taps}) if taps else outs


def load_tflite(source, name: str | None = None) -> TFLiteModule:
    """Read a .tflite file (a path, or bytes with ``name`` for messages) into a :class:`TFLiteModule`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return TFLiteModule(read_tflite(bytes(source), name or "<bytes>"))
    path = Path(source)
    return TFLiteModule(read_tflite(path.read_bytes(), name or str(path)))
