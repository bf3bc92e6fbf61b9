"""int8 ONNX without the fp32 embedding table, for models that tie input and output embeddings.

onnxruntime-genai 0.18's builder keeps `model.embed_tokens.weight` in fp32 for int8 (its int8 path quantizes MatMuls
only, and `shared_embeddings=true` is ignored there), so a tied model stores the table twice: fp32 for the Gather and
int8 for lm_head. For SmolLM2-135M that is 113 MB of a 270.5 MB folder. The builder's own int4 graph already reads
the embedding from lm_head's int8 blocks (GatherBlockQuantized bits=8 over MatMulNBits' data), so the same is done
here after the build: the Gather reads lm_head's 8-bit blocks (zero point 128, MatMulNBits' default for 8 bits
without zero points) and the fp32 table is dropped. Done only when the table equals lm_head's weight up to its
quantization step, i.e. the embeddings really are tied.
Measured on a SmolLM2-135M SFT run (812 positions, against the merged model): see onnx_int4.py's table (int8 rows).
"""
from __future__ import annotations

import shutil
from pathlib import Path

EMBED = "model.embed_tokens.weight"


def share_int8_embedding(folder: Path) -> bool:
    """Rewrite folder/model.onnx so the token embedding reads lm_head's int8 blocks; True when rewritten."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    folder = Path(folder)
    model = onnx.load(str(folder / "model.onnx"))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    gather, source, transpose = _embedding_gather(graph, inits)
    head = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.name.startswith("/lm_head/")), None)
    if gather is None or head is None or len(head.input) != 3:
        return False
    attrs = {a.name: a.i for a in head.attribute}
    if attrs.get("bits") != 8:
        return False
    table = numpy_helper.to_array(inits[source])
    table = table.T if transpose is not None else table
    q = numpy_helper.to_array(inits[head.input[1]])  # [N, blocks, block] uint8
    scales = numpy_helper.to_array(inits[head.input[2]]).reshape(q.shape[0], q.shape[1])
    rows, width = table.shape
    if q.shape[0] != rows or q.shape[1] * q.shape[2] < width:
        return False
    deq = ((q.astype(np.float32) - 128.0) * scales[:, :, None]).reshape(rows, -1)[:, :width]
    step = np.repeat(scales, q.shape[2], axis=1)[:, :width]
    # tied: within one quantization step everywhere (the quantizer's rounding/clipping stays inside one step);
    # an untied table is off by many steps
    if not np.all(np.abs(deq - table) <= np.abs(step) * 1.001 + 1e-6):
        return False
    zp = numpy_helper.from_array(np.full(scales.shape, 128, np.uint8), head.input[2] + "_zp128")
    shape = numpy_helper.from_array(np.asarray([rows, q.shape[1] * q.shape[2]], np.int64), "/model/embed_tokens/shape")
    flat = "/model/embed_tokens/Reshape/output_0"
    reshape = helper.make_node("Reshape", [head.input[1], shape.name], [flat], name="/model/embed_tokens/Reshape")
    gbq = helper.make_node("GatherBlockQuantized", [flat, gather.input[1], head.input[2], zp.name], list(gather.output),
                           name="/model/embed_tokens/GatherBlockQuantized", domain="com.microsoft", bits=8,
                           block_size=int(attrs["block_size"]), gather_axis=0, quantize_axis=1)
    at = list(graph.node).index(gather)
    graph.node.remove(gather)
    graph.node.insert(at, gbq)
    graph.node.insert(at, reshape)
    if transpose is not None:
        graph.node.remove(transpose)
    if not any(source in n.input for n in graph.node):
        graph.initializer.remove(inits[source])
    graph.initializer.extend([zp, shape])
    tmp = folder / ".int8-shared.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        onnx.save_model(model, str(tmp / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
        for name in ("model.onnx.data", "model.onnx"):  # data first: model.onnx never points at a missing file
            (tmp / name).replace(folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _embedding_gather(graph, inits):
    """(the Gather of input_ids, the initializer it reads, the Transpose between them or None): the builder's int8
    graph gathers from model.embed_tokens.weight, its fp32 graph of a tied model from Transpose(lm_head weight)."""
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] != "input_ids":
            continue
        if node.input[0] in inits:
            return node, node.input[0], None
        parent = producers.get(node.input[0])
        if parent is not None and parent.op_type == "Transpose" and parent.input[0] in inits:
            return node, parent.input[0], parent
    return None, None, None
