"""The importance-weighted int4 recipes (export/onnx_iquant.py via onnx_int4.ort_quantize) on the tiny model: the
folder runs in onnxruntime close to the fp32 graph, every 4-bit weight dequantizes to within one step of the fp32
weight, the embedding is shared with lm_head and the scales are fp16 on disk."""
import numpy as np
import onnx
import onnxruntime  # noqa: F401  (hard dependency: a missing one fails the run, never skips it)
import pytest
from edgetune.export import onnx_int4, onnx_iquant, onnx_mixed
from edgetune.export.onnx_export import build_variant
from edgetune.export.onnx_runtime import OnnxModel
from onnx import numpy_helper

IDS = [5, 17, 42, 99, 7, 300, 12, 64, 128, 3, 250, 11]
ROWS = [[3, 9, 27, 81, 243, 100, 200, 50], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], IDS]


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory, tiny_model_dir):
    return build_variant(tiny_model_dir, tmp_path_factory.mktemp("iq") / "fp32", "fp32")


@pytest.fixture(scope="module")
def quantized(fp32_dir):
    return {r: onnx_int4.ort_quantize(fp32_dir, fp32_dir.parent / r, r, ROWS) for r in ("q41_32", "q41_32_r4", "iq4_32", "q41_32_v8", "q41_v8_b16")}


@pytest.mark.parametrize("recipe", ["q41_32", "q41_32_r4", "iq4_32", "q41_32_v8", "q41_v8_b16"])
def test_runs_in_onnxruntime_close_to_fp32(fp32_dir, quantized, recipe):
    ref = OnnxModel(fp32_dir).logits(IDS)
    ours = OnnxModel(quantized[recipe]).logits(IDS)
    assert ours.shape == ref.shape and np.isfinite(ours).all()
    assert np.abs(ours - ref).max() < 0.2  # the tolerance test_onnx.py gives the builder's int4
    nodes = onnx.load(str(quantized[recipe] / "model.onnx"), load_external_data=False).graph.node
    gathers = {n.op_type for n in nodes if "input_ids" in n.input}
    assert gathers == {"GatherBlockQuantized"}  # tied: the embedding reads lm_head's int8 blocks, no fp32 table
    assert not [n.name for n in nodes if n.op_type == "MatMul" and n.name.endswith("/MatMul")]  # all quantized


def test_dequantized_weights_within_one_step(fp32_dir, quantized):
    fp32 = onnx.load(str(fp32_dir / "model.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    model = onnx.load(str(quantized["q41_32"] / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or "lm_head" in node.name:
            continue
        name = node.input[1][: -len("_Q4")]
        w = weights[name]
        k, n = w.shape
        scales16 = inits[f"{name}_scales_f16"]
        assert scales16.dtype == np.float16  # fp16 on disk, cast to fp32 at load
        scales = scales16.astype(np.float32).reshape(n, k // 32)
        levels = onnx_iquant.unpack_nibbles(inits[node.input[1]], 32)
        deq = onnx_iquant.dequantize_offset(levels, scales, inits[f"{name}_offsets"].T)
        step = np.repeat(scales, 32, axis=1).T
        assert (np.abs(deq - w) <= step * 1.05 + 1e-7).all(), node.name
        checked += 1
    assert checked == 2 * 5  # qkv, o, gate, up, down in each of the 2 layers


def test_v8_keeps_value_and_edge_down_proj_at_8_bits(fp32_dir, quantized):
    """q41_32_v8: the fused qkv is split, v_proj (every layer) and the last layer's down_proj (use_more_bits' last
    eighth of 2 layers) are 8-bit within one step of the fp32 weights; the rest keeps the 4-bit offset layout."""
    fp32 = onnx.load(str(fp32_dir / "model.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    model = onnx.load(str(quantized["q41_32_v8"] / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    # onnxruntime's quantizer names its 8-bit nodes <name>_Q8
    bits = {n.name.removesuffix("_Q8"): {a.name: a.i for a in n.attribute}["bits"]
            for n in model.graph.node if n.op_type == "MatMulNBits"}
    eight = sorted(name for name, b in bits.items() if b == 8 and "lm_head" not in name)
    assert eight == ["/model/layers.0/attn/v_proj/MatMul", "/model/layers.1/attn/v_proj/MatMul",
                     "/model/layers.1/mlp/down_proj/MatMul"]
    assert bits["/model/layers.0/mlp/down_proj/MatMul"] == 4 and bits["/model/layers.1/attn/qk_proj/MatMul"] == 4
    for node in model.graph.node:
        if node.name.removesuffix("_Q8") not in eight:
            continue
        source = node.input[1][: -len("_Q8")]
        if source.endswith("_v"):  # the value columns split off the fused qkv weight
            w = weights[source[: -len("_v")]][:, -onnx_mixed.value_width(fp32_dir):]
        else:
            w = weights[source]
        k, n = w.shape
        scales = inits[casts.get(node.input[2], node.input[2])].astype(np.float32).reshape(n, k // 32)
        q = inits[node.input[1]].reshape(n, k // 32, 32).astype(np.float32)
        deq = ((q - 128.0) * scales[:, :, None]).reshape(n, k).T
        assert (np.abs(deq - w) <= np.abs(np.repeat(scales, 32, axis=1).T) * 1.01 + 1e-7).all(), node.name


def test_v8_b16_value_at_8_bits_down_and_o_in_blocks_of_16(fp32_dir, quantized):
    """q41_v8_b16: every v_proj 8-bit, down_proj and o_proj 4-bit offset layout in blocks of 16 (each weight within
    one step), the rest blocks of 32."""
    fp32 = onnx.load(str(fp32_dir / "model.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    model = onnx.load(str(quantized["q41_v8_b16"] / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    attrs = {n.name.removesuffix("_Q8"): {a.name: a.i for a in n.attribute}
             for n in model.graph.node if n.op_type == "MatMulNBits"}
    for layer in (0, 1):
        assert attrs[f"/model/layers.{layer}/attn/v_proj/MatMul"]["bits"] == 8
        assert attrs[f"/model/layers.{layer}/attn/qk_proj/MatMul"]["block_size"] == 32
        assert attrs[f"/model/layers.{layer}/mlp/gate_proj/MatMul"]["block_size"] == 32
        for kind in ("attn/o_proj", "mlp/down_proj"):
            name = f"/model/layers.{layer}/{kind}/MatMul"
            assert attrs[name]["bits"] == 4 and attrs[name]["block_size"] == 16
            node = next(n for n in model.graph.node if n.name == name)
            source = node.input[1][: -len("_Q4")]
            w = weights[source]
            k, n = w.shape
            scales = inits[f"{source}_scales_f16"].astype(np.float32).reshape(n, k // 16)
            levels = onnx_iquant.unpack_nibbles(inits[node.input[1]], 16)
            deq = onnx_iquant.dequantize_offset(levels, scales, inits[f"{source}_offsets"].T)
            assert (np.abs(deq - w) <= np.repeat(scales, 16, axis=1).T * 1.05 + 1e-7).all(), name
