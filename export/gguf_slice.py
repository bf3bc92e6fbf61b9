"""The F16 check in bounded memory: a layer slice through llama.cpp plus a byte check of every tensor.

llama.cpp touches every page of the file it runs, so checking a 3B model's 6.4 GB F16 GGUF in one llama.cpp
process makes those pages resident (more than an 8 GB laptop has beside everything else). Instead:

1. a small GGUF holding the first K decoder layers of the F16 (with the embeddings, final norm, output layer and all
   of its metadata, block_count = K) runs in llama.cpp against transformers running the same K layers, under the
   same F16 gates (KL divergence, token ids, vocab, template, stop tokens): this proves the graph, the hyperparameters,
   the tokenizer and the converter's transform of every kind of tensor;
2. every tensor of the F16 file is compared, byte for byte, with the converter's output for the merged checkpoint
   (read tensor by tensor with plain reads, so nothing stays resident): the layers the slice did not run hold the
   same verified transform of the right weights.

K is the smallest number of layers (at least 2) that repeats every per-layer pattern of the config, so the slice
runs each kind of layer llama.cpp distinguishes: Gemma 3's five sliding-window layers and one global layer (K=6),
SmolLM3's three RoPE layers and one without (K=4), 2 for uniform stacks (Llama, Qwen3, Phi-3).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import gguf
import numpy as np

from edgetune.events import Note, Progress, null_sink

from .families import text_config
from .gguf_convert import plan_conversion, read_config, tensor_data, write_gguf_atomically
from .verify import HFReference, verify_gguf


# `auto` checks bigger F16 files by slice: models over ~1B parameters. Measured on a Llama-3.2-1B shape (2.5 GB F16,
# benchmarks/export_phases.py): whole file 56 s, 1.07 GB anonymous + 2.60 GB mapped; slice + byte check 31 s,
# 1.55 GB peak RSS, same verdict (mean KLD 2e-7 vs 9e-7).
FULL_CHECK_MAX_BYTES = 2 * 1024**3


def use_slice(mode: str, f16_bytes: int, config: dict) -> bool:
    """export.f16_check: `sliced`, `full`, or `auto` (slice over 2 GiB or over a quarter of this machine's RAM).
    A model whose per-layer pattern does not repeat within it (the slice would be the whole file) is checked whole."""
    if slice_layers(config) >= int(text_config(config)["num_hidden_layers"]):
        return False
    if mode != "auto":
        return mode == "sliced"
    from edgetune.hardware import GB, total_ram_gb

    ram = total_ram_gb() * GB
    return f16_bytes > FULL_CHECK_MAX_BYTES or (ram > 0 and f16_bytes > ram / 4)


def slice_file_bytes(config: dict, n_params: int, mode: str) -> int:
    """Disk the layer slice takes while the F16 is checked (0 when the whole file is checked): 16-bit embeddings,
    output layer when untied, and K of the L layers."""
    if not use_slice(mode, 2 * n_params, config):
        return 0
    text = text_config(config)
    embed = int(text.get("vocab_size") or 0) * int(text.get("hidden_size") or 0)
    embed *= 1 if text.get("tie_word_embeddings", False) else 2
    return 2 * (embed + (n_params - embed) * slice_layers(config) // int(text["num_hidden_layers"]))


def slice_layers(config: dict) -> int:
    """Layers the slice must run: the period shared by every per-layer list in the config, at least 2."""
    text = text_config(config)
    total = int(text["num_hidden_layers"])
    period = 1
    for value in text.values():
        if isinstance(value, list) and len(value) == total and total:
            period = math.lcm(period, _period(value))
    pattern = text.get("sliding_window_pattern")  # older Gemma 3 configs give the period instead of layer_types
    if isinstance(pattern, int) and pattern > 0:
        period = math.lcm(period, pattern)
    return min(total, max(2, period))


def _period(values: list) -> int:
    return next(p for p in range(1, len(values) + 1) if all(v == values[i % p] for i, v in enumerate(values)))


def write_slice(src: Path, dst: Path, n_layers: int) -> Path:
    """A copy of GGUF `src` with only its first `n_layers` blocks; per-layer metadata arrays are cut to match."""
    reader = gguf.GGUFReader(src)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    block_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    total = int(reader.get_field(block_key).contents())
    writer = gguf.GGUFWriter(None, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        value = field.contents()
        if field.name == block_key:
            value = n_layers
        elif kind == gguf.GGUFValueType.ARRAY and field.name.startswith(f"{arch}.") and len(value) == total:
            value = value[:n_layers]
        writer.add_key_value(field.name, value, kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    kept = [t for t in reader.tensors if _layer(t.name) is None or _layer(t.name) < n_layers]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)

    def tensors():
        writer.write_ti_data_to_file()
        with open(src, "rb") as f:
            for t in kept:  # plain reads: the source's pages are not mapped into this process
                writer.write_tensor_data(np.frombuffer(os.pread(f.fileno(), t.n_bytes, t.data_offset), np.uint8))

    write_gguf_atomically(writer, dst, tensors)
    return dst


def _layer(name: str) -> int | None:
    return int(name.split(".")[1]) if name.startswith("blk.") else None


def tensor_mismatches(model_dir: Path, gguf_path: Path, sink=null_sink) -> tuple[int, list[str]]:
    """(tensors compared, names that differ or are missing/extra): each tensor of the GGUF file against what the
    converter makes of `model_dir` for that name, byte for byte. One tensor in memory at a time."""
    reader = gguf.GGUFReader(gguf_path)
    stored = {t.name: t for t in reader.tensors}
    ftype = int(reader.get_field(gguf.Keys.General.FILE_TYPE).contents())
    qtype = {gguf.LlamaFileType.MOSTLY_F16: gguf.GGMLQuantizationType.F16,
             gguf.LlamaFileType.MOSTLY_BF16: gguf.GGMLQuantizationType.BF16}.get(ftype, gguf.GGMLQuantizationType.F32)
    plan = plan_conversion(Path(model_dir), qtype)
    expected = {t.name for t in plan.tensors}
    bad = sorted(set(stored) ^ expected)
    with open(gguf_path, "rb") as f:
        for i, t in enumerate(plan.tensors):
            if t.name in stored and not _same_bytes(tensor_data(t), f.fileno(), stored[t.name]):
                bad.append(t.name)
            sink(Progress("f16-tensors", i + 1, len(plan.tensors), t.name))
    return len(plan.tensors), bad


CHUNK = 32 * 1024**2  # bytes compared at a time: no second copy of a 0.8 GB embedding table


def _same_bytes(want: np.ndarray, fd: int, stored) -> bool:
    want = np.ascontiguousarray(want).reshape(-1).view(np.uint8)
    if want.nbytes != stored.n_bytes:
        return False
    for a in range(0, want.nbytes, CHUNK):
        got = os.pread(fd, min(CHUNK, want.nbytes - a), stored.data_offset + a)
        if not np.array_equal(want[a:a + len(got)], np.frombuffer(got, np.uint8)):
            return False
    return True


def verify_f16_sliced(f16: Path, merged: Path, texts: list[str], cache_dir: Path, sink=null_sink) -> dict:
    """verify_gguf's result for `f16`, computed on a layer slice plus the byte check (see the module docstring).

    The chat check (greedy replies end at EOS) is left to the quantized files: a slice is not the whole model."""
    config = read_config(Path(merged))
    total, k = int(text_config(config)["num_hidden_layers"]), slice_layers(config)
    sink(Note(f"{f16.name}: checking every tensor byte for byte against the converter's output, then the first {k} "
              f"of {total} layers in llama.cpp against transformers (the whole F16 file is never mapped)"))
    compared, bad = tensor_mismatches(merged, f16, sink)
    piece = f16.with_name(f".{f16.stem}.slice{k}.gguf")
    try:
        write_slice(f16, piece, k)
        ref = HFReference(merged, cache_dir=cache_dir, sink=sink, num_layers=k)
        result = verify_gguf(piece, ref, texts, [], "f16", sink)
    finally:
        piece.unlink(missing_ok=True)
    result.update(file=f16.name, path=str(f16), size_bytes=f16.stat().st_size,
                  check={"method": "layer slice", "layers": k, "of_layers": total, "tensors_compared": compared,
                         "tensor_mismatches": bad[:5]})
    if bad:
        result["fidelity_failures"].append(
            f"{len(bad)} tensor(s) differ from the converter's output for merged/ (first: {', '.join(bad[:3])})")
        result["failures"].insert(0, result["fidelity_failures"][-1])
        result["passed"] = False
    return result
