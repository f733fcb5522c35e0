"""A TensorFlow Lite flatbuffer, read as data: tensors, constants and the operator list.

A ``.tflite`` file is a flatbuffer (schema: the ``tflite`` package) holding tensors (name, shape,
type, constant bytes) and a list of operators wired by tensor index. :func:`read_tflite` parses it
into a :class:`TFLiteGraph` — nothing in the file is executed — checking every tensor and operator
it will use; :mod:`handlib.tflite` then builds torch layers from it. DEQUANTIZE of float16
constants is folded to float32 here (MediaPipe's weights are stored as float16); integer-quantized
tensors, unsupported ops and malformed or truncated files raise :class:`TFLiteError` naming the op
(with its operator index) or the problem, and the file.
"""
from __future__ import annotations

import dataclasses
import math
import struct

import numpy as np

__all__ = ["TFLiteError", "TensorInfo", "OpInfo", "TFLiteGraph", "read_tflite", "SUPPORTED_OPS"]

# TFLite TensorType → numpy little-endian dtype (those a constant may have here)
_DTYPES = {0: "<f4", 1: "<f2", 2: "<i4", 4: "<i8"}
_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 9: "INT8", 7: "INT16"}


class TFLiteError(ValueError):
    """A .tflite file that cannot be read or holds an op this reader does not support."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph: ``shape`` in TFLite's layout (NHWC for images), ``dtype`` its name."""

    name: str
    shape: tuple
    dtype: str


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator: its type name (``"CONV_2D"`` …), tensor indices (−1: absent), options dict."""

    index: int
    type: str
    inputs: tuple
    outputs: tuple
    options: dict


@dataclasses.dataclass
class TFLiteGraph:
    """A parsed subgraph 0: tensors, operators, graph inputs/outputs and constants (numpy)."""

    source: str
    tensors: list
    ops: list
    inputs: tuple
    outputs: tuple
    constants: dict  # tensor index → np.ndarray (TFLite layout), after folding DEQUANTIZE



# ----------------------------------------------------------------------------------------------
# Reading the flatbuffer
# ----------------------------------------------------------------------------------------------
def _empty_table() -> tuple[bytes, int]:
    """A flatbuffer table with no fields: every getter on it returns the schema's default."""
    import flatbuffers

    b = flatbuffers.Builder(16)
    b.StartObject(0)
    b.Finish(b.EndObject())
    buf = bytes(b.Output())
    return buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0)


def _options(op, schema, cls_name: str, fields: tuple) -> dict:
    """The op's builtin options as a dict of ``fields`` (the schema's defaults when the file omits them)."""
    opt = getattr(schema, cls_name)()
    table = op.BuiltinOptions()
    opt.Init(*((table.Bytes, table.Pos) if table is not None else _empty_table()))
    return {f: getattr(opt, f)() for f in fields}


# op type → (options class of the schema, fields read from it)
_OPTION_FIELDS = {
    "CONV_2D": ("Conv2DOptions", ("Padding", "StrideW", "StrideH", "FusedActivationFunction",
                                  "DilationWFactor", "DilationHFactor")),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", ("Padding", "StrideW", "StrideH", "DepthMultiplier",
                                                     "FusedActivationFunction", "DilationWFactor",
                                                     "DilationHFactor")),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ("FusedActivationFunction", "KeepNumDims")),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
    "MUL": ("MulOptions", ("FusedActivationFunction",)),
    "CONCATENATION": ("ConcatenationOptions", ("Axis", "FusedActivationFunction")),
    "MAX_POOL_2D": ("Pool2DOptions", ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight",
                                      "FusedActivationFunction")),
    "MEAN": ("ReducerOptions", ("KeepDims",)),
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", ("AlignCorners", "HalfPixelCenters")),
}
_NO_OPTIONS = ("LOGISTIC", "RELU", "RELU6", "TANH", "PRELU", "PAD", "RESHAPE", "DEQUANTIZE")
SUPPORTED_OPS = tuple(sorted(set(_OPTION_FIELDS) | set(_NO_OPTIONS)))


def _op_type(model, op, schema) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    # builtin codes ≥ 127 live in BuiltinCode; older files only fill the deprecated int8 field
    num = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if num == schema.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        return "CUSTOM:" + (custom.decode() if custom else "?")
    return schema.utils.BUILTIN_OPCODE2NAME.get(num, f"BUILTIN_{num}")


def _constant(model, tensor, data: bytes, source: str):
    """The tensor's constant value (np.ndarray, TFLite layout) or None when it has no data."""
    buf = model.Buffers(tensor.Buffer())
    off, size = (buf.Offset(), buf.Size()) if hasattr(buf, "Offset") else (0, 0)
    if off > 1:  # large models keep buffers after the flatbuffer, addressed by offset/size
        if off + size > len(data):
            raise TFLiteError(f"{source}: tensor {tensor.Name().decode()!r} buffer at byte offset {off} "
                              f"+ {size} runs past the end of the file ({len(data)} bytes): truncated?")
        raw = data[off:off + size]
    else:
        if buf.DataLength() == 0:
            return None
        raw = buf.DataAsNumpy().tobytes()
    shape = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    name, ttype = tensor.Name().decode(), tensor.Type()
    quant = tensor.Quantization()
    if ttype not in _DTYPES or (quant is not None and quant.ScaleLength() > 0 and ttype != 0):
        raise TFLiteError(f"{source}: constant {name!r} of type {_TYPE_NAMES.get(ttype, ttype)} "
                          "(quantized or unsupported type); only float32/float16/int32/int64 constants "
                          "are supported")
    arr = np.frombuffer(raw, dtype=_DTYPES[ttype])
    if arr.size != math.prod(shape):
        raise TFLiteError(f"{source}: constant {name!r} has {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def read_tflite(data: bytes, source: str = "<bytes>") -> TFLiteGraph:
    """Parse a .tflite flatbuffer (subgraph 0) into plain Python/numpy records.

    Args:
        data: the file's bytes. source: a name for error messages (the file's path).
    Returns:
        a :class:`TFLiteGraph`; float16 constants that feed DEQUANTIZE are folded to float32 and
        those DEQUANTIZE ops dropped.
    Raises:
        TFLiteError naming ``source``: not a TFLite file, malformed or truncated, an unsupported op.
    """
    import tflite as schema
    import tflite.utils  # noqa: F401 - BUILTIN_OPCODE2NAME

    data = bytes(data)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteError(f"{source}: not a TFLite flatbuffer ({len(data)} bytes, no 'TFL3' identifier)")
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise TFLiteError(f"{source}: the model has no subgraph")
        g = model.Subgraphs(0)
        tensors = []
        for i in range(g.TensorsLength()):
            t = g.Tensors(i)
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            tensors.append(TensorInfo(t.Name().decode(), shape, _TYPE_NAMES.get(t.Type(), str(t.Type()))))
        constants = {}
        for i in range(g.TensorsLength()):
            value = _constant(model, g.Tensors(i), data, source)
            if value is not None:
                constants[i] = value
        ops = []
        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            kind = _op_type(model, op, schema)
            if kind not in SUPPORTED_OPS:
                raise TFLiteError(f"{source}: unsupported op {kind} (operator {k}); supported: "
                                  + ", ".join(SUPPORTED_OPS))
            cls_fields = _OPTION_FIELDS.get(kind)
            opts = _options(op, schema, *cls_fields) if cls_fields else {}
            ins = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
            outs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            ops.append(OpInfo(k, kind, ins, outs, opts))
        inputs = tuple(int(i) for i in g.InputsAsNumpy())
        outputs = tuple(int(i) for i in g.OutputsAsNumpy())
    except TFLiteError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, AttributeError) as err:
        raise TFLiteError(f"{source}: malformed or truncated TFLite flatbuffer ({len(data)} bytes): "
                          f"{type(err).__name__}: {err}") from err
    graph = TFLiteGraph(source, tensors, ops, inputs, outputs, constants)
    _fold_dequantize(graph)
    return graph


def _fold_dequantize(graph: TFLiteGraph) -> None:
    """Replace DEQUANTIZE(float16 constant) by a float32 constant; refuse any other DEQUANTIZE."""
    kept = []
    for op in graph.ops:
        if op.type != "DEQUANTIZE":
            kept.append(op)
            continue
        src = graph.constants.get(op.inputs[0])
        if src is None or src.dtype != np.float16:
            raise TFLiteError(f"{graph.source}: unsupported op DEQUANTIZE (operator {op.index}) of a "
                              "non-constant or non-float16 tensor (integer quantization is not supported)")
        graph.constants[op.outputs[0]] = src.astype(np.float32)
    graph.ops = kept
