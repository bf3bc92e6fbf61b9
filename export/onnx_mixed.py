"""Which MatMuls of an int4 recipe get 8 bits instead: llama.cpp's choice for Q4_K_M, made to fit ONNX's graph.

llama.cpp's Q4_K_M gives attn_v and, in the layers use_more_bits picks (the first and last eighth, then every
third), ffn_down a wider type. The builder fuses q, k and v into one qkv_proj MatMul, so split_v cuts the value
columns off into their own MatMul (qk_proj + v_proj, joined by a Concat) before quantizing; the 8-bit ones are then
quantized like lm_head (MatMulNBits bits=8, symmetric, block 32). An int8 weight with fp16 scales costs 8.5 bits
against the offset layout's 4.75. The other use of bytes: the offset layout in blocks of 16 (a scale and an offset
per 16 weights, 5.5 bits). Measured in onnx_int4.py's docstring; benchmarks/int4_sensitivity.py ranks single
tensors (on SmolLM2 v_proj is the best buy per byte, then down_proj of the first and last layer). With integer zero
points (onnx_int4's gz4 recipes) the 8-bit tensors are the only bytes the default buys: blocks of 16 decode slower
(benchmarks/deploy.py, one run: gz4_ve_b16d 1.08x GGUF Q4_K_M's decode speed, gz4_32_vm with int8 down_proj 1.19x).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

LAYER = re.compile(r"/model/layers\.(\d+)/")


def value_width(fp32_dir: Path) -> int:
    """Columns of the fused qkv_proj that are the value projection (kv heads x head size)."""
    decoder = json.loads((Path(fp32_dir) / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
    return int(decoder["num_key_value_heads"]) * int(decoder["head_size"])


def split_v(model, v_width: int, base_dir: Path | None = None) -> list[str]:
    """Replace every fused qkv_proj MatMul by qk_proj and v_proj MatMuls joined by a Concat (same output, in place);
    returns the v_proj node names. base_dir: where the weights are, for a model loaded without its external data."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    names = []
    for node in [n for n in graph.node if n.op_type == "MatMul" and n.name.endswith("/attn/qkv_proj/MatMul")
                 and n.input[1] in inits]:
        w = numpy_helper.to_array(inits[node.input[1]], str(base_dir or ""))
        if w.ndim != 2 or w.shape[1] <= v_width:
            continue
        qk = numpy_helper.from_array(np.ascontiguousarray(w[:, :-v_width]), f"{node.input[1]}_qk")
        v = numpy_helper.from_array(np.ascontiguousarray(w[:, -v_width:]), f"{node.input[1]}_v")
        base, out = node.name[: -len("qkv_proj/MatMul")], node.output[0]
        new = [helper.make_node("MatMul", [node.input[0], qk.name], [f"{out}_qk"], name=f"{base}qk_proj/MatMul"),
               helper.make_node("MatMul", [node.input[0], v.name], [f"{out}_v"], name=f"{base}v_proj/MatMul"),
               helper.make_node("Concat", [f"{out}_qk", f"{out}_v"], [out], name=f"{base}qkv_proj/Concat", axis=-1)]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for j, n in enumerate(new):
            graph.node.insert(at + j, n)
        graph.initializer.remove(inits[node.input[1]])
        graph.initializer.extend([qk, v])
        names.append(new[1].name)
    return names


def more_bits_layers(n_layers: int) -> list[int]:
    """llama.cpp's use_more_bits layers in the order this module upgrades them: the first and last eighth, then
    every third layer in between."""
    edge = n_layers // 8
    first = [i for i in range(n_layers) if i < edge or i >= 7 * n_layers // 8]
    return first + [i for i in range(edge, 7 * n_layers // 8) if (i - edge) % 3 == 2]


def block16_nodes(model, rule: str) -> list[str]:
    """Names of the MatMuls a rule quantizes at 4 bits in blocks of 16 instead of 32 (offset layout: 5.5 bits a
    weight): "v8_b16" down_proj and o_proj everywhere, "b16_du" down_proj and up_proj everywhere, "b16_all" every
    body MatMul (lm_head is skipped by the caller); "v_edges_b16d": down_proj where v_edges leaves it at 4 bits."""
    kinds = {"v8_b16": ("/mlp/down_proj/MatMul", "/attn/o_proj/MatMul"),
             "v_edges_b16d": ("/mlp/down_proj/MatMul",),
             "b16_du": ("/mlp/down_proj/MatMul", "/mlp/up_proj/MatMul"),
             "b16_all": ("/MatMul",)}.get(rule, ())
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and kinds and n.name.endswith(kinds)]


def int8_nodes(model, rule: str) -> list[str]:
    """Names of the MatMuls a rule puts at 8 bits (after split_v):
    "v_edges" (and its _b16 variants): every v_proj, and down_proj in the first and last eighth of the layers
    (use_more_bits' first part);
    "v_more": every v_proj, and down_proj in all of use_more_bits' layers (llama.cpp's Q4_K_M choice);
    "d_more": those down_proj only (v_proj stays 4-bit inside the fused qkv_proj: no split_v, see splits_v);
    "v_more_u": v_more + up_proj of the first and last layer (the int4 default's rule; int4_sensitivity.py ranks
    them next); "v_more_o": v_more + o_proj in the first and last eighth."""
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    layers = sorted({int(m.group(1)) for m in map(LAYER.search, matmuls) if m})
    picked = more_bits_layers(len(layers))
    if rule in ("b16_du", "b16_all"):
        return []
    if rule == "v8_b16":
        return [n for n in matmuls if n.endswith("/attn/v_proj/MatMul")]
    if rule.startswith("v_edges"):
        edge = len(layers) // 8
        picked = [i for i in picked if i < edge or i >= 7 * len(layers) // 8]
    elif rule not in ("v_more", "d_more", "v_more_u", "v_more_o"):
        raise ValueError(f"unknown int8 rule {rule!r}")
    downs = {f"/model/layers.{i}/mlp/down_proj/MatMul" for i in picked}
    if rule == "v_more_u" and layers:  # + up_proj of the first and last layer (benchmarks/int4_sensitivity.py's next buys)
        downs |= {f"/model/layers.{i}/mlp/up_proj/MatMul" for i in (layers[0], layers[-1])}
    if rule == "v_more_o":  # + o_proj in the first and last eighth
        downs |= {f"/model/layers.{i}/attn/o_proj/MatMul" for i in picked
                  if i < len(layers) // 8 or i >= 7 * len(layers) // 8}
    return [n for n in matmuls if (n.endswith("/attn/v_proj/MatMul") and splits_v(rule)) or n in downs]


def splits_v(rule: str) -> bool:
    """Whether a rule treats v_proj apart from q and k (so split_v must cut it off the fused qkv_proj first)."""
    return rule != "d_more"
