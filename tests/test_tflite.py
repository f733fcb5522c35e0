"""handlib.tflite: small graphs written here with the flatbuffers builder, run by torch and by the
ai-edge-litert interpreter; the two MediaPipe models; padding/resize conventions; error cases."""
import zipfile

import numpy as np
import pytest
import torch

from handlib.tflite import TFLiteError, load_tflite, read_tflite, resize_bilinear, same_padding

schema = pytest.importorskip("tflite")
flatbuffers = pytest.importorskip("flatbuffers")
litert = pytest.importorskip("ai_edge_litert.interpreter")

CODES = {"ADD": 0, "CONCATENATION": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4, "DEQUANTIZE": 6,
         "FULLY_CONNECTED": 9, "LOGISTIC": 14, "MAX_POOL_2D": 17, "RESHAPE": 22, "RESIZE_BILINEAR": 23,
         "SOFTMAX": 25, "PAD": 34, "MEAN": 40, "PRELU": 54, "MUL": 18, "RELU": 19, "RELU6": 21, "TANH": 28}
TYPES = {np.dtype("float32"): 0, np.dtype("float16"): 1, np.dtype("int32"): 2}


def _vector(b, table, field, values):
    getattr(schema, f"{table}Start{field}Vector")(b, len(values))
    for v in reversed(values):
        b.PrependInt32(int(v))
    return b.EndVector()


def _options(b, cls, fields):
    getattr(schema, f"{cls}Start")(b)
    for field, value in fields.items():
        getattr(schema, f"{cls}Add{field}")(b, value)
    return getattr(schema, f"{cls}End")(b)


def build_tflite(tensors, ops, inputs, outputs) -> bytes:
    """A one-subgraph .tflite file.

    tensors: [(name, shape, np.ndarray constant or None, dtype)]; ops: [(type, inputs, outputs,
    options class name or None, {field: value})]. Buffer 0 is the empty sentinel TFLite expects.
    """
    b = flatbuffers.Builder(1024)
    buffers = [(schema.BufferStart(b), schema.BufferEnd(b))[1]]
    tensor_offs = []
    for name, shape, value, dtype in tensors:
        buf_index = 0
        if value is not None:
            data = b.CreateNumpyVector(np.frombuffer(np.ascontiguousarray(value).tobytes(), np.uint8))
            schema.BufferStart(b)
            schema.BufferAddData(b, data)
            buffers.append(schema.BufferEnd(b))
            buf_index = len(buffers) - 1
        name_off, shape_off = b.CreateString(name), _vector(b, "Tensor", "Shape", shape)
        schema.TensorStart(b)
        schema.TensorAddShape(b, shape_off)
        schema.TensorAddType(b, TYPES[np.dtype(dtype)])
        schema.TensorAddBuffer(b, buf_index)
        schema.TensorAddName(b, name_off)
        tensor_offs.append(schema.TensorEnd(b))
    kinds = sorted({op[0] for op in ops})
    code_offs = []
    for kind in kinds:
        schema.OperatorCodeStart(b)
        schema.OperatorCodeAddDeprecatedBuiltinCode(b, min(CODES[kind], 127))
        schema.OperatorCodeAddBuiltinCode(b, CODES[kind])
        schema.OperatorCodeAddVersion(b, 1)
        code_offs.append(schema.OperatorCodeEnd(b))
    op_offs = []
    for kind, ins, outs, cls, fields in ops:
        opt = _options(b, cls, fields) if cls else None
        ins_off, outs_off = _vector(b, "Operator", "Inputs", ins), _vector(b, "Operator", "Outputs", outs)
        schema.OperatorStart(b)
        schema.OperatorAddOpcodeIndex(b, kinds.index(kind))
        schema.OperatorAddInputs(b, ins_off)
        schema.OperatorAddOutputs(b, outs_off)
        if cls:
            schema.OperatorAddBuiltinOptionsType(b, getattr(schema.BuiltinOptions, cls))
            schema.OperatorAddBuiltinOptions(b, opt)
        op_offs.append(schema.OperatorEnd(b))

    def table_vector(table, field, offs):
        getattr(schema, f"{table}Start{field}Vector")(b, len(offs))
        for o in reversed(offs):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    t_vec = table_vector("SubGraph", "Tensors", tensor_offs)
    o_vec = table_vector("SubGraph", "Operators", op_offs)
    i_vec, out_vec = _vector(b, "SubGraph", "Inputs", inputs), _vector(b, "SubGraph", "Outputs", outputs)
    schema.SubGraphStart(b)
    schema.SubGraphAddTensors(b, t_vec)
    schema.SubGraphAddInputs(b, i_vec)
    schema.SubGraphAddOutputs(b, out_vec)
    schema.SubGraphAddOperators(b, o_vec)
    sub = schema.SubGraphEnd(b)
    codes, subs = table_vector("Model", "OperatorCodes", code_offs), table_vector("Model", "Subgraphs", [sub])
    bufs = table_vector("Model", "Buffers", buffers)
    schema.ModelStart(b)
    schema.ModelAddVersion(b, 3)
    schema.ModelAddOperatorCodes(b, codes)
    schema.ModelAddSubgraphs(b, subs)
    schema.ModelAddBuffers(b, bufs)
    b.Finish(schema.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def run_both(data: bytes, xs: list, atol: float = 1e-5):
    """Run the file in the interpreter and in torch (NHWC ↔ NCHW), assert equal, return torch's outputs."""
    it = litert.Interpreter(model_content=data)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), xs):
        it.set_tensor(d["index"], x)
    it.invoke()
    ref = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    module = load_tflite(data, "tiny.tflite")
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2) if a.ndim == 4 else torch.from_numpy(a)  # noqa: E731
    with torch.no_grad():
        outs = module(*[nchw(x) for x in xs])
    for i, out in zip(module.graph.outputs, outs):
        got = out.permute(0, 2, 3, 1) if out.dim() == 4 else out
        want = ref[module.graph.tensors[i].name]
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, atol=atol, rtol=0)
    return module, outs


def _rng_array(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv_add_relu6_graph(rng):
    """CONV_2D 3×3 stride 2 SAME on 8×8 (asymmetric padding), float16 weights via DEQUANTIZE, then ADD of
    a per-channel constant with a fused RELU6."""
    w16 = _rng_array(rng, 4, 3, 3, 3).astype(np.float16)
    tensors = [("x", [1, 8, 8, 3], None, np.float32), ("w16", [4, 3, 3, 3], w16, np.float16),
               ("w", [4, 3, 3, 3], None, np.float32), ("b", [4], _rng_array(rng, 4), np.float32),
               ("c", [1, 4, 4, 4], None, np.float32), ("k", [4], _rng_array(rng, 4, scale=3), np.float32),
               ("y", [1, 4, 4, 4], None, np.float32)]
    ops = [("DEQUANTIZE", [1], [2], None, {}),
           ("CONV_2D", [0, 2, 3], [4], "Conv2DOptions", dict(Padding=0, StrideW=2, StrideH=2)),
           ("ADD", [4, 5], [6], "AddOptions", dict(FusedActivationFunction=3))]
    return build_tflite(tensors, ops, [0], [6])


def test_same_padding_puts_the_odd_pixel_at_the_end():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(6, 5, 1) == (2, 2)
    assert same_padding(8, 2, 2) == (0, 0)
    assert same_padding(9, 3, 1, dilation=2) == (2, 2)


def test_conv_add_relu6_matches_interpreter():
    rng = np.random.default_rng(0)
    data = conv_add_relu6_graph(rng)
    module, (y,) = run_both(data, [_rng_array(rng, 1, 8, 8, 3)])
    assert 0 < (y == 6).sum() and 0 < (y == 0).sum()  # both clamps of RELU6 are exercised
    assert module.op_counts() == {"CONV_2D": 1, "ADD": 1}  # DEQUANTIZE folded
    assert module.layers[0].conv.weight.dtype == torch.float32
    assert isinstance(module.consts["t5"], torch.nn.Parameter)


@pytest.mark.parametrize("size,stride", [(8, 2), (7, 1)])
def test_depthwise_with_multiplier_matches_interpreter(size, stride):
    rng = np.random.default_rng(1)
    out = -(-size // stride)
    tensors = [("x", [1, size, size, 3], None, np.float32),
               ("w", [1, 5, 5, 6], _rng_array(rng, 1, 5, 5, 6), np.float32),
               ("b", [6], _rng_array(rng, 6), np.float32), ("y", [1, out, out, 6], None, np.float32)]
    ops = [("DEPTHWISE_CONV_2D", [0, 1, 2], [3], "DepthwiseConv2DOptions",
            dict(Padding=0, StrideW=stride, StrideH=stride, DepthMultiplier=2, FusedActivationFunction=1))]
    run_both(build_tflite(tensors, ops, [0], [3]), [_rng_array(rng, 1, size, size, 3)])


def test_fully_connected_flattens_in_nhwc_order():
    rng = np.random.default_rng(2)
    tensors = [("x", [1, 3, 4, 2], None, np.float32), ("w", [5, 24], _rng_array(rng, 5, 24), np.float32),
               ("b", [5], _rng_array(rng, 5), np.float32), ("h", [1, 5], None, np.float32),
               ("y", [1, 5], None, np.float32)]
    ops = [("FULLY_CONNECTED", [0, 1, 2], [3], "FullyConnectedOptions", {}),
           ("LOGISTIC", [3], [4], None, {})]
    run_both(build_tflite(tensors, ops, [0], [4]), [_rng_array(rng, 1, 3, 4, 2)])


@pytest.mark.parametrize("align,half", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("src,dst", [((5, 6), (8, 12)), ((8, 7), (5, 3))])
def test_resize_bilinear_conventions_match_interpreter(align, half, src, dst):
    rng = np.random.default_rng(3)
    tensors = [("x", [1, *src, 2], None, np.float32), ("size", [2], np.array(dst, np.int32), np.int32),
               ("y", [1, *dst, 2], None, np.float32)]
    ops = [("RESIZE_BILINEAR", [0, 1], [2], "ResizeBilinearOptions",
            dict(AlignCorners=align, HalfPixelCenters=half))]
    run_both(build_tflite(tensors, ops, [0], [2]), [_rng_array(rng, 1, *src, 2)])


def test_resize_half_pixel_equals_torch_interpolate():
    x = torch.randn(2, 3, 6, 6)
    want = torch.nn.functional.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_bilinear(x, (12, 12), half_pixel_centers=True), want)


def test_palm_style_ops_match_interpreter():
    """PRELU, MAX_POOL (SAME, odd size), channel PAD, RESHAPE, CONCATENATION and MEAN in one graph."""
    rng = np.random.default_rng(4)
    tensors = [("x", [1, 5, 5, 2], None, np.float32), ("a", [1, 1, 2], _rng_array(rng, 1, 1, 2), np.float32),
               ("p", [1, 5, 5, 2], None, np.float32), ("m", [1, 3, 3, 2], None, np.float32),
               ("pads", [4, 2], np.array([[0, 0], [0, 0], [0, 0], [0, 2]], np.int32), np.int32),
               ("q", [1, 3, 3, 4], None, np.float32), ("shape", [3], np.array([1, 9, 4], np.int32), np.int32),
               ("r", [1, 9, 4], None, np.float32), ("axes", [2], np.array([1, 2], np.int32), np.int32),
               ("mean", [1, 4], None, np.float32), ("r2", [1, 9, 4], None, np.float32),
               ("cat", [1, 18, 4], None, np.float32)]
    ops = [("PRELU", [0, 1], [2], None, {}),
           ("MAX_POOL_2D", [2], [3], "Pool2DOptions", dict(Padding=0, StrideW=2, StrideH=2, FilterWidth=2,
                                                           FilterHeight=2)),
           ("PAD", [3, 4], [5], None, {}),
           ("RESHAPE", [5, 6], [7], None, {}),
           ("MEAN", [5, 8], [9], "ReducerOptions", dict(KeepDims=False)),
           ("RESHAPE", [5, 6], [10], None, {}),
           ("CONCATENATION", [7, 10], [11], "ConcatenationOptions", dict(Axis=1))]
    module, _ = run_both(build_tflite(tensors, ops, [0], [11, 9]), [_rng_array(rng, 1, 5, 5, 2)])
    (cat, mean), taps = module(torch.randn(3, 2, 5, 5), taps=("q",))  # any batch size; a tap
    assert cat.shape == (3, 18, 4) and mean.shape == (3, 4) and taps["q"].shape == (3, 4, 3, 3)


def test_mul_and_standalone_activations_match_interpreter():
    """MUL (per-channel constant, fused RELU), then RELU6, TANH and RELU as operators of their own."""
    rng = np.random.default_rng(9)
    shape = [1, 4, 5, 3]
    tensors = [("x", shape, None, np.float32), ("k", [3], _rng_array(rng, 3, scale=4), np.float32)]
    tensors += [(name, shape, None, np.float32) for name in ("m", "r6", "t", "r")]
    ops = [("MUL", [0, 1], [2], "MulOptions", dict(FusedActivationFunction=1)),
           ("RELU6", [2], [3], None, {}), ("TANH", [0], [4], None, {}), ("RELU", [4], [5], None, {})]
    module, (r6, r) = run_both(build_tflite(tensors, ops, [0], [3, 5]), [_rng_array(rng, *shape, scale=3)])
    assert (r6 == 6).any() and (r6 == 0).any() and (r == 0).any() and (r > 0.9).any()


def test_gradients_reach_every_weight_and_match_finite_differences():
    module = load_tflite(conv_add_relu6_graph(np.random.default_rng(5)), "tiny.tflite").double()
    x = (torch.rand(1, 3, 8, 8, dtype=torch.float64) * 0.5).requires_grad_()
    with torch.no_grad():  # keep away from RELU6's kinks so finite differences are smooth
        module.consts["t5"].fill_(2.0)
    assert torch.autograd.gradcheck(lambda x: module(x)[0], (x,), eps=1e-6, atol=1e-6)
    module(x)[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_real_models_match_interpreter(task_bytes):
    """Both MediaPipe models on a seeded random input (pixels: landmarks ≤ 5e-4 px, logits ≤ 5e-4)."""
    rng = np.random.default_rng(6)
    for name, size in [("hand_landmarks_detector.tflite", 224), ("hand_detector.tflite", 192)]:
        run_both(task_bytes[name], [rng.random((1, size, size, 3), dtype=np.float32)], atol=5e-4)


def test_errors_name_the_problem_and_the_file(task_bytes):
    data = conv_add_relu6_graph(np.random.default_rng(7))
    with pytest.raises(TFLiteError, match=r"tiny\.tflite.*(truncated|past the end)"):
        read_tflite(data[: len(data) // 2], "tiny.tflite")
    real = task_bytes["hand_landmarks_detector.tflite"]
    with pytest.raises(TFLiteError, match=r"hand\.tflite.*truncated"):
        read_tflite(real[: len(real) - 1000], "hand.tflite")
    with pytest.raises(TFLiteError, match="not a TFLite flatbuffer"):
        read_tflite(b"PK\x03\x04 a zip, not a model", "x.task")
    tensors = [("x", [1, 4], None, np.float32), ("y", [1, 4], None, np.float32)]
    softmax = build_tflite(tensors, [("SOFTMAX", [0], [1], "SoftmaxOptions", dict(Beta=1.0))], [0], [1])
    with pytest.raises(TFLiteError, match=r"odd\.tflite: unsupported op SOFTMAX \(operator 0\)"):
        read_tflite(softmax, "odd.tflite")
    module = load_tflite(data, "tiny.tflite")
    with pytest.raises(KeyError, match="nope"):
        module(torch.zeros(1, 3, 8, 8), taps=("nope",))


@pytest.fixture(scope="module")
def task_bytes():
    from handlib.evidence_pretrained import default_model_path

    path = default_model_path()
    if not path.is_file():
        pytest.skip(f"{path} absent: run data_scripts/get_pretrained.py")
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_absent_options_table_means_schema_defaults():
    """An omitted options table (FULLY_CONNECTED): no activation, flattened input, the schema's defaults."""
    rng = np.random.default_rng(8)
    tensors = [("x", [1, 6], None, np.float32), ("w", [3, 6], _rng_array(rng, 3, 6), np.float32),
               ("b", [3], _rng_array(rng, 3), np.float32), ("y", [1, 3], None, np.float32)]
    module, (y,) = run_both(build_tflite(tensors, [("FULLY_CONNECTED", [0, 1, 2], [3], None, {})], [0], [3]),
                            [_rng_array(rng, 1, 6)])
    assert module.graph.ops[0].options == {"FusedActivationFunction": 0, "KeepNumDims": False}
    assert (y < 0).any()  # no activation applied
