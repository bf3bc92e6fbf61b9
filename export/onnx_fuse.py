"""Decode-speed rewrites of an int4 graph (onnx_iquant's offset or integer-zero-point layout + fp16_scales): the same
quantized weights, laid out so that onnxruntime's CPU decode (one token, M = 1) streams them faster.

Why (measured on SmolLM2-135M q41_32_v8, 2 threads, this 2-core CPU; benchmarks/deploy.py has the numbers): decode
is memory-bound, and the Q4_1-style offsets are an fp32 [blocks, N] matrix per MatMul (1 bit a weight, ~13 MB a
token) multiplied by the activation's block sums in a small fp32 MatMul. iq4_32, the same 4-bit blocks without
offsets, decodes ~30% faster (deploy.py: 144.7 against 109.2 tokens/s with the in-place cache); a one-off probe
(not kept) that only dropped the block-sum nodes gained nothing, so the offset MatMuls are the cost. Two things make
them cheaper without touching a weight:
- unpacked_offsets: the offset matrix built as [1, blocks, N]. onnxruntime prepacks only 2-D MatMul weights; a 3-D
  one goes to MLAS's M = 1 kernel on the plain matrix, which streams these small ones (18-48 x 576-3072 fp32)
  faster (deploy.py's RECIPE+decode rows: 111.5 against 109.2 tokens/s, both rewrites together, one run). The
  sum per output is the same, in another order (fp32 rounding).
- fuse_gate_up: gate_proj and up_proj read one activation; one MatMulNBits of N = 2 * ffn (their levels and scales
  side by side), one offset MatMul, one Sum, then a Split, instead of two of each: fewer, larger calls. Every output
  column is computed as before (bit-identical logits on its own).
fuse_gate_up_zp does the same for the integer-zero-point layout (onnx_int4's gz4 recipes), which has no offsets.
decode_layout(folder) applies them to a model folder in place; edgetune's export does that to its int4 recipes
(onnx_export.build_variant). The full-sequence logits stay bit-identical, and so do one-token steps of the default
(integer zero points: only the gate/up fusion applies; tests/unit/test_onnx_decode.py). In the offset layout,
one-token steps differ by the offsets' fp32 rounding, which the int8 activation quantization of the next MatMul can
turn into ~1 logit (benchmarks/decode_fidelity.py, SmolLM2 q41_32_v8 run, 812 positions fed one token at a time:
top-1 0.927 -> 0.921, KLD 0.0358 -> 0.0363, worst 1.36 -> 1.44; 2 of 3 greedy verification chat replies unchanged).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GATE, UP = "/mlp/gate_proj/", "/mlp/up_proj/"


def decode_layout(folder: Path) -> dict:
    """fuse_gate_up + unpacked_offsets on folder/model.onnx (+ model.onnx.data), rewritten in place when either
    applies (call it on a folder being built, not on one a reader may have open); returns the counts."""
    import onnx

    folder = Path(folder)
    model = onnx.load(str(folder / "model.onnx"))
    counts = {"gate_up_pairs": fuse_gate_up(model) + fuse_gate_up_zp(model),
              "offset_matrices": unpacked_offsets(model)}
    if any(counts.values()):
        data = folder / "model.onnx.data"
        data.unlink(missing_ok=True)  # onnx appends external data to an existing file
        onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name)
    return counts


def unpacked_offsets(model) -> int:
    """Give every offset matrix a leading 1 (its 1/16 constant becomes [1, 1, 1]); returns how many."""
    done = 0
    for tensor in model.graph.initializer:
        if tensor.name.endswith("_sixteenth") and len(tensor.dims) == 0:
            tensor.dims.extend([1, 1, 1])
            done += 1
    return done


def fuse_gate_up(model) -> int:
    """Replace each layer's gate_proj / up_proj offset-layout pair (same activation, block size, accuracy level,
    fp16 scales, no low-rank term) by one MatMulNBits + offset MatMul + Sum and a Split into the two outputs the
    rest of the graph reads; returns how many pairs. Call before unpacked_offsets or after: both layouts work."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    sums = {n.input[0]: n for n in graph.node if n.op_type == "Sum" and len(n.input) == 2}
    done = 0
    for gate in [n for n in graph.node if n.op_type == "MatMulNBits" and GATE in n.name]:
        up = nodes.get(gate.name.replace(GATE, UP))
        pair = _offset_parts(gate, nodes, sums, inits), _offset_parts(up, nodes, sums, inits) if up else None
        if None in pair or up.input[0] != gate.input[0] or _attrs(gate)["K"] != _attrs(up)["K"] or \
                not _same_but_n(gate, up):
            continue
        (g_sum, g_off, gp), (u_sum, u_off, up_) = pair
        if g_off.input[0] != u_off.input[0]:  # not the same block sums
            continue
        att = _attrs(gate)
        n_gate, n_up, blocks = att["N"], _attrs(up)["N"], att["K"] // att["block_size"]
        p = gp.replace("gate_proj", "gate_up_proj")
        name = gate.name.replace(GATE, "/mlp/gate_up_proj/")
        sixteenth = numpy_helper.to_array(inits[f"{gp}_sixteenth"])
        tensors = [
            numpy_helper.from_array(np.concatenate([_arr(inits, f"{gp}_Q4"), _arr(inits, f"{up_}_Q4")]), f"{p}_Q4"),
            numpy_helper.from_array(np.concatenate([_arr(inits, f"{gp}_scales_f16"), _arr(inits, f"{up_}_scales_f16")]),
                                    f"{p}_scales_f16"),
            numpy_helper.from_array(
                np.concatenate([_arr(inits, f"{gp}_offsets"), _arr(inits, f"{up_}_offsets")], axis=1), f"{p}_offsets"),
            numpy_helper.from_array(np.asarray([n_gate + n_up, blocks], np.int64), f"{p}_sshape"),
            numpy_helper.from_array(sixteenth.copy(), f"{p}_sixteenth"),
            numpy_helper.from_array(np.asarray([n_gate, n_up], np.int64), f"{p}_split")]
        new = [helper.make_node("Cast", [f"{p}_scales_f16"], [f"{p}_scales"], name=f"{p}_scales_cast",
                                to=TensorProto.FLOAT),
               helper.make_node("MatMulNBits", [gate.input[0], f"{p}_Q4", f"{p}_scales"], [f"{name}_q4"], name=name,
                                domain=gate.domain, **{**att, "N": n_gate + n_up}),
               helper.make_node("Reshape", [f"{p}_scales", f"{p}_sshape"], [f"{p}_s2"], name=f"{name}_s2"),
               helper.make_node("Transpose", [f"{p}_s2"], [f"{p}_sT"], name=f"{name}_sT", perm=[1, 0]),
               helper.make_node("Cast", [f"{p}_offsets"], [f"{p}_of"], name=f"{name}_of", to=TensorProto.FLOAT),
               helper.make_node("Mul", [f"{p}_of", f"{p}_sT"], [f"{p}_o1"], name=f"{name}_o1"),
               helper.make_node("Mul", [f"{p}_o1", f"{p}_sixteenth"], [f"{p}_offset"], name=f"{name}_offset"),
               helper.make_node("MatMul", [g_off.input[0], f"{p}_offset"], [f"{name}_off"], name=f"{name}_off"),
               helper.make_node("Sum", [f"{name}_q4", f"{name}_off"], [f"{name}_out"], name=f"{name}_sum"),
               helper.make_node("Split", [f"{name}_out", f"{p}_split"], [g_sum.output[0], u_sum.output[0]],
                                name=f"{name}_split", axis=-1)]
        # in the up projection's Sum's place: everything the pair read is computed by then, the readers come later
        _splice(graph, [gate, up, g_sum, u_sum, g_off, u_off], new, tensors, after=u_sum)
        done += 1
    _prune(model)
    return done


def fuse_gate_up_zp(model) -> int:
    """fuse_gate_up for the integer-zero-point layout (onnx_iquant.matmul_nbits + fp16_scales: MatMulNBits with
    packed zero points, scales cast from fp16): one MatMulNBits of N = 2 * ffn and a Split. Levels, scales and zero
    points are stored per output column, so the pair's are concatenated as they are; every column is computed as
    before. Returns how many pairs."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    done = 0
    for gate in [n for n in graph.node if n.op_type == "MatMulNBits" and GATE in n.name]:
        up = nodes.get(gate.name.replace(GATE, UP))
        parts = _zp_parts(gate, inits), _zp_parts(up, inits) if up is not None else None
        if None in parts or up.input[0] != gate.input[0] or \
                not _same_but_n(gate, up):
            continue
        att = _attrs(gate)
        n_gate, n_up = att["N"], _attrs(up)["N"]
        p = parts[0][0].replace("gate_proj", "gate_up_proj")
        name = gate.name.replace(GATE, "/mlp/gate_up_proj/")
        tensors = [numpy_helper.from_array(np.concatenate([_arr(inits, a), _arr(inits, b)]), f"{p}{suffix}")
                   for a, b, suffix in zip(parts[0][1], parts[1][1], ("_Q4", "_scales_f16", "_zero_points"))]
        tensors.append(numpy_helper.from_array(np.asarray([n_gate, n_up], np.int64), f"{p}_split"))
        new = [helper.make_node("Cast", [f"{p}_scales_f16"], [f"{p}_scales"], name=f"{p}_scales_cast",
                                to=TensorProto.FLOAT),
               helper.make_node("MatMulNBits", [gate.input[0], f"{p}_Q4", f"{p}_scales", f"{p}_zero_points"],
                                [f"{name}_out"], name=name, domain=gate.domain, **{**att, "N": n_gate + n_up}),
               helper.make_node("Split", [f"{name}_out", f"{p}_split"], [gate.output[0], up.output[0]],
                                name=f"{name}_split", axis=-1)]
        order = list(graph.node)  # in the gate's place: the pair's one input is ready there, readers come later
        _splice(graph, [gate, up], new, tensors, after=order[order.index(gate) - 1] if order.index(gate) else None)
        done += 1
    _prune(model)
    return done


def _splice(graph, old: list, new: list, tensors: list, after) -> None:
    """Remove `old` and insert `new` (with their initializers) right after the node `after` (None: at the start)."""
    order = list(graph.node)
    at_node = next((n for n in order[order.index(after) + 1:] if n not in old), None) if after is not None else \
        next((n for n in order if n not in old), None)
    for node in old:
        graph.node.remove(node)
    at = list(graph.node).index(at_node) if at_node is not None else len(graph.node)
    for j, node in enumerate(new):
        graph.node.insert(at + j, node)
    graph.initializer.extend(tensors)


def _zp_parts(node, inits: dict):
    """(weight-name prefix, (levels, fp16 scales, zero points) initializer names) for a zero-point MatMulNBits with
    fp16 scales, else None."""
    if node is None or len(node.input) != 4 or not node.input[1].endswith("_Q4"):
        return None
    prefix = node.input[1][: -len("_Q4")]
    names = (node.input[1], f"{node.input[2]}_f16", node.input[3])
    return (prefix, names) if all(n in inits for n in names) else None


def _offset_parts(node, nodes: dict, sums: dict, inits: dict):
    """(its Sum, its offset MatMul, weight-name prefix) for an offset-layout MatMulNBits with fp16 scales and no
    low-rank term, else None."""
    if node is None or len(node.input) != 3 or not node.input[1].endswith("_Q4"):
        return None
    prefix = node.input[1][: -len("_Q4")]
    total, off = sums.get(node.output[0]), nodes.get(f"{node.name}_off")
    if total is None or off is None or f"{prefix}_offsets" not in inits or f"{prefix}_scales_f16" not in inits:
        return None
    return total, off, prefix


def _same_but_n(a, b) -> bool:
    """Two MatMulNBits with the same attributes but their output width N."""
    return {k: v for k, v in _attrs(a).items() if k != "N"} == {k: v for k, v in _attrs(b).items() if k != "N"}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _arr(inits: dict, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name])


def _prune(model) -> None:
    """Drop nodes whose outputs nothing reads (the pairs' old offset chains and scale casts), then unread
    initializers."""
    graph = model.graph
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        for n in dead:
            graph.node.remove(n)
        if not dead:
            break
    read = {i for n in graph.node for i in n.input}
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
