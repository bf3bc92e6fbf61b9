"""Importance-weighted 4-bit block quantization of the fp32 graph's MatMuls into onnxruntime MatMulNBits.

The GGUF importance-matrix idea on ONNX: each MatMul's input activations are collected from the fp32 graph on the
run's calibration rows; w_j = mean square of input column j says how much an error in weight row j moves the
output, and each block of 32 weights (along K) minimizes sum_j w_j sqrt(sigma2 + x_j^2) (x_j - xq_j)^2 (llama.cpp's
weighting) over a grid of candidate scales, refit by weighted least squares (make_qkx2_quants). Two layouts:
- quantize_graph: integer zero points packed two per byte (MatMulNBits' fast uint8 path). An integer zero point
  puts 0 on the grid, so a block's levels cannot sit where its weights are: KLD 0.29 on SmolLM2 rounded this way;
  with onnx_gptq.py's error feedback it is the int4 default (gz4_32_vm, onnx_int4.py has the numbers).
- quantize_graph_offset: llama.cpp Q4_1's fractional offset, x = (level - 8) * scale + offset,
  as MatMulNBits without zero points plus blocksum(x) @ offsets, a [K/32, N] MatMul (1/32 of the main one) whose
  matrix onnxruntime builds at load from an int8 per block (the offset in 1/16 of the scale) by constant-folded
  Cast/Reshape/Transpose/Mul. Scales are fp16 on disk (a folded Cast), so a weight costs 4 + 0.5 + 0.25 bits.
  An optional low-rank term (x @ U) @ V (fp16, the importance-weighted top singular vectors of the remaining
  error) adds r * (K + N) halves per MatMul.
HQQ's fp32 zero points give the same grid but onnxruntime's CPU kernel runs them ~12x slower; the offset layout
decodes at GGUF Q4_K_M's speed, the integer zero points ~1.2x faster (numbers in onnx_int4.py's docstring).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MS_DOMAIN = "com.microsoft"


def collect_importance(fp32_dir: Path, rows: list[list[int]], threads: int | None = None) -> dict[str, np.ndarray]:
    """{MatMul input tensor name: mean square of each input column over the calibration tokens} from the fp32 graph."""
    sums: dict[str, np.ndarray] = {}
    count = 0
    for acts in matmul_inputs(fp32_dir, rows, threads=threads):
        for name, act in acts.items():
            sums[name] = sums.get(name, 0.0) + (act * act).sum(axis=0)
        count += len(next(iter(acts.values()), ()))
    return {name: (s / max(count, 1)).astype(np.float32) for name, s in sums.items()}


def matmul_inputs(fp32_dir: Path, rows: list[list[int]], names: set[str] | None = None, threads: int | None = None):
    """Yield, per calibration row, {MatMul input tensor name: its activations [tokens, K] float64} for the fp32
    graph's MatMuls with a constant weight (only `names` when given): the graph runs with those inputs as extra
    outputs, its weights read from fp32_dir's external data file."""
    import onnx
    import onnxruntime as ort

    fp32_dir = Path(fp32_dir)
    model = onnx.load(str(fp32_dir / "model.onnx"), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    wanted = sorted({n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits
                     and (names is None or n.input[0] in names)})
    outputs = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    # the graph travels as bytes; its weights are read from the folder's external data file where they lie
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(fp32_dir))
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: i for i in session.get_inputs()}
    genai = json.loads((fp32_dir / "genai_config.json").read_text(encoding="utf-8"))
    head_size = genai["model"]["decoder"]["head_size"]
    for ids in rows:
        out = session.run(wanted, _feed(feeds, ids, head_size))
        yield {name: act.reshape(-1, act.shape[-1]).astype(np.float64) for name, act in zip(wanted, out)}


def _feed(inputs: dict, ids: list[int], head_size: int) -> dict[str, np.ndarray]:
    """Full-sequence inputs with an empty KV cache for a builder decoder graph."""
    feed = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    if "position_ids" in inputs:
        feed["position_ids"] = np.arange(len(ids), dtype=np.int64)[None]
    for name, spec in inputs.items():
        if name.startswith("past_key_values."):
            feed[name] = np.zeros((1, spec.shape[1], 0, head_size), np.float32)
    return feed


def quantize_blocks(weight: np.ndarray, importance: np.ndarray | None, block: int = 32, bits: int = 4,
                    steps: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weight [K, N] (MatMul's B) -> (levels [N, blocks, block] uint8, scales [N, blocks] f32, zero points [N, blocks]
    uint8), K padded with zeros to whole blocks. Dequantized: (levels - zp) * scale."""
    nmax = (1 << bits) - 1
    k, n = weight.shape
    blocks = -(-k // block)
    w = np.zeros((blocks * block, n), np.float32)
    w[:k] = weight
    x = w.T.reshape(n, blocks, block).astype(np.float32)
    imp = np.zeros(blocks * block, np.float32)
    imp[:k] = 1.0 if importance is None else np.maximum(importance, 1e-12)
    wt = _block_weights(x, imp)
    lo = np.minimum(x.min(axis=2, keepdims=True), 0.0)
    hi = np.maximum(x.max(axis=2, keepdims=True), 0.0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    best_err = np.full(lo.shape, np.inf, np.float32)
    best_s = span / nmax
    best_z = np.clip(np.round(-lo / best_s), 0, nmax)
    for i in range(steps + 1):
        scale0 = span / (nmax - 1.0 + 0.1 * i)  # rmin -1, rdelta 0.1, nstep 20 as in make_qkx2_quants
        z0 = np.round(-lo / scale0)
        for dz in (-1.0, 0.0, 1.0):
            z = np.clip(z0 + dz, 0, nmax)
            q = np.clip(np.round(x / scale0) + z, 0, nmax) - z
            num = (wt * x * q).sum(axis=2, keepdims=True)
            den = (wt * q * q).sum(axis=2, keepdims=True)
            s = np.where(den > 0, num / np.where(den > 0, den, 1.0), scale0)
            s = np.where(s > 0, s, scale0)
            q = np.clip(np.round(x / s) + z, 0, nmax) - z  # requantize with the refit scale
            err = (wt * (x - q * s) ** 2).sum(axis=2, keepdims=True)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_s = np.where(better, s, best_s)
            best_z = np.where(better, z, best_z)
    levels = np.clip(np.round(x / best_s) + best_z, 0, nmax).astype(np.uint8)
    return levels, best_s[..., 0].astype(np.float32), best_z[..., 0].astype(np.uint8)


def _block_weights(x: np.ndarray, imp: np.ndarray) -> np.ndarray:
    """llama.cpp's q4_K weighting with an importance matrix, imp_j * sqrt(sigma2 + x_j^2), for x [N, blocks, block]
    and imp [blocks * block]."""
    sigma2 = (x * x).mean(axis=2, keepdims=True) * 2.0
    return imp.reshape(1, x.shape[1], x.shape[2]) * np.sqrt(sigma2 + x * x)


def dequantize(levels: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, k: int) -> np.ndarray:
    """[K, N] weight back from quantize_blocks' output."""
    n, blocks, block = levels.shape
    x = (levels.astype(np.float32) - zero_points[..., None]) * scales[..., None]
    return x.reshape(n, blocks * block)[:, :k].T


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Two 4-bit values per byte along the last axis, the first in the low nibble (MatMulNBits' order); odd lengths
    are padded with 0."""
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros(values.shape[:-1] + (1,), values.dtype)], axis=-1)
    return ((values[..., 1::2] & 0x0F) << 4 | (values[..., 0::2] & 0x0F)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, length: int) -> np.ndarray:
    out = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[:-1] + (-1,))
    return out[..., :length]


def matmul_nbits(name: str, activation: str, output: str, weight_name: str, weight: np.ndarray,
                 importance: np.ndarray | None, block: int = 32, accuracy_level: int = 4,
                 quantized: tuple | None = None):
    """(MatMulNBits node, its initializers) replacing MatMul(activation, weight) -> output: 4-bit levels with
    integer zero points packed two per byte; `quantized`: quantize_blocks' output made elsewhere (onnx_gptq.py)."""
    from onnx import helper, numpy_helper

    k, n = weight.shape
    levels, scales, zps = quantized or quantize_blocks(weight, importance, block, 4)
    inits = [numpy_helper.from_array(pack_nibbles(levels), f"{weight_name}_Q4"),
             numpy_helper.from_array(scales.reshape(-1), f"{weight_name}_scales"),
             numpy_helper.from_array(pack_nibbles(zps).reshape(-1), f"{weight_name}_zero_points")]
    node = helper.make_node("MatMulNBits", [activation] + [t.name for t in inits], [output], name=name,
                            domain=MS_DOMAIN, K=k, N=n, bits=4, block_size=block, accuracy_level=accuracy_level)
    return node, inits


def quantize_graph(model, importance: dict[str, np.ndarray], block: int = 32, accuracy_level: int = 4,
                   skip: set[str] = frozenset(), progress=None, quantize=None,
                   blocks: dict[str, int] | None = None, base_dir: Path | None = None) -> int:
    """Replace every MatMul with a constant 2-D weight (except `skip`) by matmul_nbits' MatMulNBits in place
    (`blocks` gives some nodes another block size; base_dir: where a model loaded without its external data has it,
    each weight then read when its turn comes).
    `quantize`, if given, is called as quantize(activation name, weight, block) for quantize_blocks' output (GPTQ;
    None falls back to importance-weighted rounding). Returns how many were replaced."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    targets = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits and n.name not in skip
               and len(inits[n.input[1]].dims) == 2]
    for i, node in enumerate(targets):
        weight = numpy_helper.to_array(inits[node.input[1]], str(base_dir or "")).astype(np.float32)
        b = (blocks or {}).get(node.name, block)
        done = quantize(node.input[0], weight, b) if quantize else None
        new, tensors = matmul_nbits(node.name, node.input[0], node.output[0], node.input[1], weight,
                                    importance.get(node.input[0]), b, accuracy_level, done)
        _replace(model, node, [new], tensors, inits)
        if progress:
            progress(i + 1, len(targets), node.name)
    return len(targets)


def _replace(model, node, nodes: list, tensors: list, inits: dict) -> None:
    """`nodes` in node's place, their initializers added, node's weight dropped once nothing reads it, and the
    com.microsoft opset declared (MatMulNBits lives there)."""
    from onnx import helper

    graph = model.graph
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for j, new in enumerate(nodes):
        graph.node.insert(at + j, new)
    graph.initializer.extend(tensors)
    if not any(node.input[1] in m.input for m in graph.node):
        graph.initializer.remove(inits[node.input[1]])
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def quantize_blocks_offset(weight: np.ndarray, importance: np.ndarray | None, block: int = 32,
                           steps: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-bit blocks with a fractional offset (llama.cpp Q4_1's x = level * scale + min, the min searched and refit by
    weighted least squares as make_qkx2_quants does), the offset stored in 1/16 steps of the scale relative to level
    8: weight [K, N] -> (levels [N, blocks, block] uint8, scales [N, blocks] f32, offsets [N, blocks] int8) with
    x = (level - 8) * scale + offset / 16 * scale, every weight within one step (+ the offset's 1/32 step). K must be
    a multiple of block."""
    nmax = 15
    k, n = weight.shape
    blocks = k // block
    x = weight.T.reshape(n, blocks, block).astype(np.float64)
    imp = np.ones(k) if importance is None else np.maximum(importance.astype(np.float64), 1e-12)
    wt = _block_weights(x, imp)
    lo, hi = x.min(axis=2, keepdims=True), x.max(axis=2, keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1e-8)
    sw = wt.sum(axis=2, keepdims=True)
    sx = (wt * x).sum(axis=2, keepdims=True)
    best_err = np.full(lo.shape, np.inf)
    best_s, best_m = span / nmax, lo.copy()
    for i in range(steps + 1):
        lv = np.clip(np.round((x - lo) * (nmax - 1.0 + 0.1 * i) / span), 0, nmax)
        sl, sl2 = (wt * lv).sum(2, keepdims=True), (wt * lv * lv).sum(2, keepdims=True)
        sxl = (wt * lv * x).sum(2, keepdims=True)
        det = sw * sl2 - sl * sl
        ok = det > 0
        det = np.where(ok, det, 1.0)
        s = np.where(ok, (sw * sxl - sx * sl) / det, span / nmax)
        m = np.where(ok, (sl2 * sx - sl * sxl) / det, lo)
        s = np.where(s > 0, s, span / nmax)
        err = (wt * (lv * s + m - x) ** 2).sum(axis=2, keepdims=True)
        # no weight clipped by more than one step (the plain min/max grid, the fallback, clips none)
        better = (err < best_err) & (lo >= m - s) & (hi <= m + (nmax + 1) * s)
        best_err, best_s = np.where(better, err, best_err), np.where(better, s, best_s)
        best_m = np.where(better, m, best_m)
    offsets = np.clip(np.round((best_m / best_s + 8.0) * 16.0), -128, 127)
    m_q = best_s * (offsets / 16.0 - 8.0)
    levels = np.clip(np.round((x - m_q) / best_s), 0, nmax).astype(np.uint8)
    return levels, best_s[..., 0].astype(np.float32), offsets[..., 0].astype(np.int8)


def dequantize_offset(levels: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    n, blocks, block = levels.shape
    x = (levels.astype(np.float32) - 8.0 + offsets[..., None].astype(np.float32) / 16.0) * scales[..., None]
    return x.reshape(n, blocks * block).T


def offset_matmul(name: str, activation: str, output: str, weight_name: str, weight: np.ndarray,
                  importance: np.ndarray | None, block_sums: str | None, block: int = 32, rank: int = 0,
                  accuracy_level: int = 4, quantized: tuple | None = None):
    """(nodes, initializers, block-sum tensor name) computing activation @ weight as MatMulNBits (4-bit levels, no
    zero points: level 8 is zero) + blocksum(activation) @ offsets: the offsets' [blocks, N] matrix is built from
    int8 initializers by constant-foldable Cast/Reshape/Transpose/Mul, so on disk it costs one byte a block.
    rank > 0 adds the importance-weighted SVD's top `rank` of the remaining error as fp16 factors (x @ U) @ V.
    block_sums: an existing block-sum tensor of the same activation (shared by qkv / gate / up), or None.
    quantized: quantize_blocks_offset's output made elsewhere (onnx_gptq.py), else it is called here."""
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape
    blocks = k // block
    levels, scales, offsets = quantized or quantize_blocks_offset(weight, importance, block)
    p = weight_name
    inits = [numpy_helper.from_array(pack_nibbles(levels), f"{p}_Q4"),
             numpy_helper.from_array(scales.reshape(-1), f"{p}_scales"),
             numpy_helper.from_array(offsets.T.copy(), f"{p}_offsets"),  # [blocks, N]
             numpy_helper.from_array(np.asarray([n, blocks], np.int64), f"{p}_sshape"),
             numpy_helper.from_array(np.asarray(1.0 / 16.0, np.float32), f"{p}_sixteenth")]
    nodes = [helper.make_node("MatMulNBits", [activation, inits[0].name, inits[1].name], [f"{output}_q4"],
                              name=name, domain=MS_DOMAIN, K=k, N=n, bits=4, block_size=block,
                              accuracy_level=accuracy_level),
             helper.make_node("Reshape", [inits[1].name, inits[3].name], [f"{p}_s2"], name=f"{name}_s2"),
             helper.make_node("Transpose", [f"{p}_s2"], [f"{p}_sT"], name=f"{name}_sT", perm=[1, 0]),
             helper.make_node("Cast", [inits[2].name], [f"{p}_of"], name=f"{name}_of", to=TensorProto.FLOAT),
             helper.make_node("Mul", [f"{p}_of", f"{p}_sT"], [f"{p}_o1"], name=f"{name}_o1"),
             helper.make_node("Mul", [f"{p}_o1", inits[4].name], [f"{p}_offset"], name=f"{name}_offset")]
    if block_sums is None:
        block_sums = f"{activation}_blocksums{block}"
        shape = numpy_helper.from_array(np.asarray([0, 0, blocks, block], np.int64), f"{block_sums}_shape")
        axes = numpy_helper.from_array(np.asarray([-1], np.int64), f"{block_sums}_axes")
        inits += [shape, axes]
        nodes += [helper.make_node("Reshape", [activation, shape.name], [f"{block_sums}_r"], name=f"{block_sums}_r"),
                  helper.make_node("ReduceSum", [f"{block_sums}_r", axes.name], [block_sums], name=block_sums,
                                   keepdims=0)]
    nodes += [helper.make_node("MatMul", [block_sums, f"{p}_offset"], [f"{output}_off"], name=f"{name}_off")]
    terms = [f"{output}_q4", f"{output}_off"]
    if rank > 0:
        err = weight - dequantize_offset(levels, scales, offsets)
        root = np.sqrt(np.ones(k) if importance is None else np.maximum(importance.astype(np.float64), 1e-12))
        left, right = low_rank(err * root[:, None], rank)
        inits += [numpy_helper.from_array((left / root[:, None]).astype(np.float16), f"{p}_U"),
                  numpy_helper.from_array(right.astype(np.float16), f"{p}_V")]
        nodes += [helper.make_node("Cast", [f"{p}_U"], [f"{p}_U32"], name=f"{name}_U32", to=TensorProto.FLOAT),
                  helper.make_node("Cast", [f"{p}_V"], [f"{p}_V32"], name=f"{name}_V32", to=TensorProto.FLOAT),
                  helper.make_node("MatMul", [activation, f"{p}_U32"], [f"{output}_xu"], name=f"{name}_xu"),
                  helper.make_node("MatMul", [f"{output}_xu", f"{p}_V32"], [f"{output}_lr"], name=f"{name}_lr")]
        terms.append(f"{output}_lr")
    nodes.append(helper.make_node("Sum", terms, [output], name=f"{name}_sum"))
    return nodes, inits, block_sums


def quantize_graph_offset(model, importance: dict[str, np.ndarray], block: int = 32, rank: int = 0,
                          accuracy_level: int = 4, skip: set[str] = frozenset(), ranks: dict[str, int] | None = None,
                          progress=None, blocks: dict[str, int] | None = None, quantize=None,
                          base_dir: Path | None = None) -> int:
    """Like quantize_graph with offset_matmul's layout (and its optional low-rank residual, per node via `ranks`;
    `blocks` gives some nodes another block size, e.g. 16: one more scale and offset per 16 weights). `quantize`,
    if given, is called as quantize(activation name, weight, block) for quantize_blocks_offset's output (GPTQ);
    base_dir as in quantize_graph."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    targets = [nd for nd in graph.node if nd.op_type == "MatMul" and nd.input[1] in inits and nd.name not in skip
               and len(inits[nd.input[1]].dims) == 2 and inits[nd.input[1]].dims[0] % block == 0]
    sums: dict[tuple[str, int], str] = {}  # block sums shared by the MatMuls reading one activation at one block
    for i, node in enumerate(targets):
        weight = numpy_helper.to_array(inits[node.input[1]], str(base_dir or "")).astype(np.float32)
        r = (ranks or {}).get(node.name, rank)
        b = (blocks or {}).get(node.name, block)
        key = (node.input[0], b)
        done = quantize(node.input[0], weight, b) if quantize else None
        nodes, tensors, sums[key] = offset_matmul(node.name, node.input[0], node.output[0], node.input[1], weight,
                                                  importance.get(node.input[0]), sums.get(key), b, r, accuracy_level,
                                                  done)
        _replace(model, node, nodes, tensors, inits)
        if progress:
            progress(i + 1, len(targets), node.name)
    return len(targets)


def low_rank(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(U [K, r], V [r, N]) with U @ V the best rank-r approximation of matrix, from the eigenvectors of the smaller
    Gram matrix (a full SVD of every MatMul's error is minutes on 2 cores)."""
    a = matrix.astype(np.float64)
    if a.shape[0] >= a.shape[1]:
        _, vecs = np.linalg.eigh(a.T @ a)
        v = vecs[:, ::-1][:, :rank]  # [N, r]
        return a @ v, v.T
    _, vecs = np.linalg.eigh(a @ a.T)
    u = vecs[:, ::-1][:, :rank]  # [K, r]
    return u, u.T @ a


def fp16_scales(model) -> int:
    """Store every MatMulNBits' fp32 scales as fp16 on disk, cast back by a Cast node onnxruntime folds at load (the
    kernel still sees fp32 scales). Exact for scales that came from fp16 (GGUF-derived weights), else a 2^-11
    relative change of each step. Returns how many were converted."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    done = 0
    for node in [nd for nd in graph.node if nd.op_type == "MatMulNBits"]:
        name = node.input[2]
        tensor = inits.get(name)
        if tensor is None or tensor.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{name}_f16")
        graph.initializer.remove(tensor)
        graph.initializer.append(half)
        graph.node.insert(0, helper.make_node("Cast", [half.name], [name], name=f"{name}_cast", to=TensorProto.FLOAT))
        done += 1
    return done
