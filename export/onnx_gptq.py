"""GPTQ for onnx_iquant.py's 4-bit layouts: blocks of 32 whose rounding errors are compensated.

onnx_iquant.quantize_blocks_offset rounds each weight on its own, weighted by the mean square of its input column (the
GGUF importance matrix: the diagonal of X^T X). GPTQ (Frantar et al. 2022, the algorithm of gptq/auto-gptq) uses the
whole Gram matrix H = X^T X of each MatMul's input over the run's calibration rows: input rows are quantized one at a
time, in order, and each one's rounding error is pushed onto the rows not yet quantized through H^-1, so that x @ W,
not W, stays close. Each block's scale and offset are searched (as in quantize_blocks_offset) on the block's weights
as updated so far, when GPTQ reaches the block. Two grids: the offset layout (Q4_1-style fractional offsets, an
extra fp32 MatMul per weight at decode) and, with grid="zp", MatMulNBits' own integer zero points (the int4 default,
gz4_32_vm: faster to decode; on that coarser grid GPTQ halves the KLD of rounding each weight, all 4-bit 0.135
against 0.267, and the 8-bit tensors do the rest; onnx_int4.py's table).

Damping: the run keeps 32 calibration rows (the GGUF importance matrix's), ~1,900 tokens on SmolLM2, fewer than
down_proj's 1,536 inputs need for a well-estimated H; GPTQ's usual 1% of the mean diagonal then fits the calibration
tokens and loses off them (held-out KLD 0.067 off the grid), 10% keeps the gain (0.047; onnx_int4.py's table).
Act order (loudest inputs first, block scales fixed up front) was no better on the run with a fresh grid and worse
on the embedded one for the offset grid; on the integer grid it lowers the mean KLD but loses top-1 and doubles the
worst position (onnx_int4.py has the table).
Cost: the Gram matrices are collected in passes over the calibration rows that fit 40% of free RAM (Grams); per
MatMul one Cholesky of H and the row loop. At Llama-3.2-1B shapes (random weights, benchmarks/onnx_scale.py, build +
quantize + verify, this shared 2-core box), the default gz4_32_vmu: 644 s, peak RSS 12.5 GB, with each fp32 weight
read from the folder when its MatMul is quantized (onnx_int4.ort_quantize); the same code before that change, in the
same run, 632 s and 16.2 GB, the same folder (975 MB, KLD 0.047). The peak now comes 571 s in (of 644: verifying,
after quantization), the earlier one 208 s in (quantizing: the fp32 model held beside onnxruntime's fp32 session and
the Gram matrices, 5 GB at 1B). Earlier, with the offset grid (g41_32_v8): 1116 s / 19.6 GB
against 613 s / 15.6 GB for importance-weighted rounding in the same run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .onnx_iquant import matmul_inputs, quantize_blocks, quantize_blocks_offset


def collect_gram(fp32_dir: Path, rows: list[list[int]], names: set[str] | None = None,
                 threads: int | None = None) -> dict[str, np.ndarray]:
    """{MatMul input tensor name: X^T X / tokens [K, K] float32} over the calibration rows (only `names` if given);
    sums are float64 per row, then added up in float32 (GPTQ's damping dwarfs that rounding)."""
    grams: dict[str, np.ndarray] = {}
    count = 0
    for acts in matmul_inputs(fp32_dir, rows, names, threads):
        for name, act in acts.items():
            gram = (act.T @ act).astype(np.float32)
            if name in grams:
                grams[name] += gram
            else:
                grams[name] = gram
        count += len(next(iter(acts.values()), ()))
    for gram in grams.values():
        gram /= max(count, 1)
    return grams


class Grams:
    """The Gram matrices of a graph's MatMul inputs, collected as the quantizer asks for them, in groups that fit
    `budget` bytes: one pass over the calibration rows per group (each pass runs the whole fp32 graph: onnxruntime
    does not prune to the outputs asked for). SmolLM2-135M's 121 inputs take 0.4 GB in one pass; Llama-3.2-1B's
    shapes need 5.1 GB, 3B's 10.7 GB, so on a small machine they take several passes."""

    def __init__(self, fp32_dir: Path, rows: list[list[int]], order: list[tuple[str, int]], budget: int,
                 progress=None):
        self.fp32_dir, self.rows, self.budget, self.progress = Path(fp32_dir), rows, budget, progress
        self.order = list(dict.fromkeys(order))  # (activation, K) in the order the quantizer visits them
        self.held: dict[str, np.ndarray] = {}
        self.passes = 0

    def release(self) -> None:
        """Drop the group held (at 1B the last group can be all 5 GB, still held while the folder is written)."""
        self.held = {}

    def get(self, name: str) -> np.ndarray | None:
        if not self.rows:
            return None
        if name not in self.held:
            self.held = {}  # drop the last group before collecting the next
            names = [n for n, _ in self.order]
            start = names.index(name) if name in names else 0
            group, size = [], 0
            for n, k in self.order[start:]:
                if group and size + 4 * k * k > self.budget:
                    break
                group.append(n)
                size += 4 * k * k
            self.passes += 1
            if self.progress:
                self.progress(f"calibration pass {self.passes} ({len(self.rows)} rows, {len(group)} MatMul inputs, "
                              f"{size / 2**30:.1f} GiB of Gram matrices)")
            self.held = collect_gram(self.fp32_dir, self.rows, set(group) | {name})
        return self.held.get(name)


def matmul_order(model, skip: set[str]) -> list[tuple[str, int]]:
    """(input tensor, K) of the MatMuls with a constant 2-D weight, in graph order, except the `skip` nodes."""
    inits = {t.name: t for t in model.graph.initializer}
    return [(n.input[0], int(inits[n.input[1]].dims[0])) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
            and n.name not in skip]


def gram_budget(share: float = 0.4) -> int:
    """Bytes the Gram matrices may hold: a share of the memory available now."""
    import psutil

    return int(share * psutil.virtual_memory().available)


def inverse_factor(gram: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """Upper Cholesky factor U of (H + damp * mean(diag H) * I)^-1 = U^T U, GPTQ's form of the inverse Hessian: row i
    holds how row i's rounding error is spread onto the rows after it. Input rows that never see activation are
    pinned. From one Cholesky of H with its order reversed: if J H J = L L^T (J reverses), U = J L^-1 J: a
    Cholesky and a triangular inverse instead of GPTQ's Cholesky, inverse and second Cholesky; float32 through
    torch, as GPTQ does (a 1B model's down_proj has K = 8192)."""
    import torch

    h = torch.from_numpy(np.array(gram, np.float32))
    diag = h.diagonal()
    diag[diag <= 0] = 1.0
    diag += damp * diag.mean()
    lower = torch.linalg.cholesky(h.flip(0, 1))
    inverse = torch.linalg.solve_triangular(lower, torch.eye(len(h)), upper=False)
    return inverse.flip(0, 1).numpy()


def quantize_gptq(weight: np.ndarray, gram: np.ndarray, block: int = 32, damp: float = 0.01,
                         act_order: bool = False, grid: str = "offset") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weight [K, N] (MatMul's B, rows = input features) -> quantize_blocks_offset's (levels [N, blocks, block] uint8,
    scales [N, blocks] f32, offsets [N, blocks] int8), rows quantized in order with GPTQ's error feedback. Each
    block's scale and offset are searched on its weights as updated when GPTQ reaches it; with act_order the rows go
    loudest input first and every block's scale and offset are fixed up front from the original weights (GPTQ's
    static groups). grid="zp": integer zero points instead (quantize_blocks' (levels, scales, zero points [N, blocks]
    uint8), value (level - zp) * scale), MatMulNBits' own layout, as GPTQ itself quantizes."""
    k, n = weight.shape
    blocks = k // block
    importance = np.diag(gram).copy()
    order = np.argsort(-importance, kind="stable") if act_order else np.arange(k)
    w = weight.astype(np.float32)[order]
    w[importance[order] <= 0] = 0.0
    u = inverse_factor(gram[np.ix_(order, order)], damp).astype(np.float32)
    levels = np.zeros((n, blocks, block), np.uint8)
    scales = np.zeros((n, blocks), np.float32)
    points = np.zeros((n, blocks), np.uint8 if grid == "zp" else np.int8)
    if act_order:
        for b in range(blocks):
            _fit_block(weight[b * block:(b + 1) * block], importance[b * block:(b + 1) * block], block, b, scales,
                       points)
    chunk = block * max(1, 128 // block)  # errors reach the rows after the chunk in one GEMM (GPTQ's lazy batch)
    for lo in range(0, k, chunk):
        hi = min(lo + chunk, k)
        errs = np.zeros((hi - lo, n), np.float32)
        for i in range(lo, hi):
            if not act_order and i % block == 0:  # rows i..i+block are block i // block itself
                _fit_block(w[i:i + block], importance[i:i + block], block, i // block, scales, points)
            b, j = divmod(int(order[i]), block)
            step = scales[:, b]
            base = _level0(step, points[:, b])
            q = np.clip(np.round((w[i] - base) / step), 0, 15)
            levels[:, b, j] = q
            err = (w[i] - (q * step + base)) / u[i, i]
            w[i + 1:hi] -= np.outer(u[i, i + 1:hi], err)
            errs[i - lo] = err
        w[hi:] -= u[lo:hi, hi:].T @ errs
    return levels, scales, points


def _level0(step: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The value of level 0: an offset in 1/16 of the step from level 8, or minus an integer zero point (uint8)."""
    if points.dtype == np.uint8:
        return -step * points.astype(np.float32)
    return step * (points.astype(np.float32) / 16.0 - 8.0)


def _fit_block(rows: np.ndarray, importance: np.ndarray, block: int, b: int, scales: np.ndarray,
               points: np.ndarray) -> None:
    """Scale and offset (or integer zero point, for a uint8 `points`) of block b searched on `rows` [block, N]; the
    scale kept as fp16 will store it (fp16_scales), so the error fed back is the one the file has."""
    if points.dtype == np.uint8:
        _, s, off = quantize_blocks(rows, importance, block, 4)
    else:
        _, s, off = quantize_blocks_offset(rows, importance, block)
    scales[:, b] = s[:, 0].astype(np.float16)
    points[:, b] = off[:, 0]
