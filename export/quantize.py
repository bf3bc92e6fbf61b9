"""F16 GGUF -> quantized GGUF through llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize` binding).

llama-cpp-python ships no llama-quantize binary, but the library call is the same code. An importance matrix
(per-input-column mean squared activations of each weight) can be passed to it: llama.cpp's public API takes it as a
NULL-terminated array of {name, data, size}; we read it from an imatrix file in llama.cpp's GGUF imatrix format
(the one `llama-imatrix` writes, and `compute_imatrix` below writes from a transformers forward pass).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgetune.errors import ExportError
from edgetune.events import Note, Progress, null_sink

from .types import GGUF_TYPES

# Rough bits per weight of each type on small models (mixed types inside), for the disk-space check only.
_BITS_PER_WEIGHT = {"f16": 16, "bf16": 16, "q8_0": 8.5, "q6_k": 6.6, "q5_k_m": 5.7, "q4_k_m": 4.9, "q4_k_s": 4.6,
                    "q3_k_m": 3.9, "q2_k": 3.4}

IMATRIX_BATCH_ROWS = 8  # rows of <= 512 tokens per forward pass: activations stay ~100s of MB at 3B


def quantize(f16_path: Path, out_path: Path, qtype: str, sink=null_sink, imatrix: Path | None = None) -> Path:
    """Quantize a F16/BF16/F32 GGUF to `qtype` (a key of GGUF_TYPES) at out_path, atomically; returns out_path."""
    import llama_cpp

    f16_path, out_path = Path(f16_path), Path(out_path)
    qtype = qtype.lower()
    if qtype not in GGUF_TYPES:
        raise ExportError(f"unknown GGUF type {qtype!r}", hint=f"choose one of {', '.join(GGUF_TYPES)}")
    if not f16_path.is_file():
        raise ExportError(f"{f16_path}: no such GGUF file", hint="convert the merged model to F16 GGUF first")
    with f16_path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ExportError(f"{f16_path}: not a GGUF file", hint="pass the F16 .gguf written by the converter")

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, GGUF_TYPES[qtype])
    params.nthread = _usable_cpus()
    keep_alive = None
    if imatrix is not None:
        entries = read_imatrix(Path(imatrix))
        params.imatrix, keep_alive = _imatrix_array(entries)
    estimate = int(f16_path.stat().st_size * _BITS_PER_WEIGHT[qtype] / 16) + (1 << 20)
    sink(Note(f"quantize plan: {f16_path.name} -> {qtype.upper()} with {params.nthread} threads"
              f"{f', imatrix {Path(imatrix).name} ({len(entries)} tensors)' if imatrix else ''}, "
              f"~{estimate / 1e6:.0f} MB -> {out_path}"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_path.parent).free
    if free < estimate:
        raise ExportError(f"not enough disk space in {out_path.parent}: {qtype} needs ~{estimate / 1e9:.2f} GB, "
                          f"{free / 1e9:.2f} GB free", hint="free some space or choose another output folder")

    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    sink(Progress("gguf-quantize", 0, 1, qtype))
    try:
        rc = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"llama.cpp could not quantize {f16_path.name} to {qtype} (code {rc})",
                              hint="see llama.cpp's log above; check the input loads with llama_cpp.Llama")
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        del keep_alive  # the C side copied the imatrix; the buffers may go now
    sink(Progress("gguf-quantize", 1, 1, qtype))
    return out_path


def read_imatrix(path: Path) -> dict[str, np.ndarray]:
    """Per-weight importance vectors from a llama.cpp GGUF imatrix file (sums / counts, as llama-quantize does)."""
    import gguf

    if not path.is_file():
        raise ExportError(f"{path}: no such imatrix file", hint="compute one with compute_imatrix or llama-imatrix")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise ExportError(f"{path}: not a GGUF imatrix file ({e})",
                          hint="the legacy .dat imatrix format is not supported; write it with --output-format gguf")
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    entries: dict[str, np.ndarray] = {}
    for name, sums in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        weight = name[: -len(".in_sum2")]
        counts = tensors.get(f"{weight}.counts")
        if counts is None:
            raise ExportError(f"{path}: {weight} has sums but no counts", hint="recompute the imatrix")
        sums = sums.reshape(counts.size, -1)
        counts = counts.reshape(-1, 1)
        # rows never seen (unused experts) get weight 1, like llama-quantize
        entries[weight] = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0).astype(np.float32).ravel()
    if not entries:
        raise ExportError(f"{path}: no imatrix entries (*.in_sum2 tensors)", hint="recompute the imatrix")
    return entries


def _imatrix_array(entries: dict[str, np.ndarray]):
    """Build llama.cpp's NULL-terminated llama_model_imatrix_data array; returns it and the buffers it points into."""
    import llama_cpp

    array = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
    keep = []
    for item, (name, values) in zip(array, entries.items()):
        values = np.ascontiguousarray(values, dtype=np.float32)
        item.name = name.encode()
        item.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        item.size = values.size
        keep.append(values)
    array[len(entries)].name = None  # terminator
    return ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data)), (array, keep)


def compute_imatrix(model_dir: Path, texts: list[str], out_path: Path, max_tokens: int = 512,
                    sink=null_sink) -> Path:
    """Run the HF model in model_dir (layer by layer from disk, a batch of rows per pass) over `texts` and write llama.cpp's GGUF imatrix format to out_path.

    Same statistic llama-imatrix gathers (sum of squared inputs per column of every matmul weight, and the
    token count), taken from transformers forward hooks on nn.Linear: the q/k row permutation of the GGUF does not
    touch input columns, so the vectors apply unchanged to the converted tensors.
    """
    import gguf
    import torch
    from edgetune.streamed import open_causal_lm
    from edgetune.tokenizer import load_tokenizer

    from .families import family_for, gguf_support, text_config
    from .gguf_convert import _language_model_name, read_config, write_gguf_atomically

    model_dir, out_path = Path(model_dir), Path(out_path)
    raw = read_config(model_dir)
    if (reason := gguf_support(raw)) is not None:
        raise ExportError(f"{model_dir}: {reason}", hint="an importance matrix is only for GGUF export")
    cfg = text_config(raw)
    name_map = gguf.get_tensor_name_map(family_for(raw).arch, cfg["num_hidden_layers"])
    tok = load_tokenizer(model_dir)
    streamed = open_causal_lm(model_dir, sink=sink)
    model = streamed.model
    tied = bool(cfg.get("tie_word_embeddings"))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    keep: list = [None]  # the current batch's attention mask, flattened: padding is not calibration data

    def record(gguf_name: str, x) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()[keep[0]]
        sums[gguf_name] = sums.get(gguf_name, 0) + (x * x).sum(0)
        counts[gguf_name] = counts.get(gguf_name, 0) + x.shape[0]

    def hook_for(gguf_name: str):
        return lambda module, inputs, output: record(gguf_name, inputs[0])

    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            plain = _language_model_name(name)
            base = plain and name_map.get_name(plain)
            if base:
                module.register_forward_hook(hook_for(f"{base}.weight"))
    # The output layer only needs its input statistics: skip the [tokens x vocab] logits (0.5 GB per 1k tokens of
    # a 128k vocab), so whole batches of calibration rows go through the model in one pass over the weights.
    model.set_output_embeddings(_input_recorder("token_embd.weight" if tied else "output.weight", record))
    rows = [r for r in (tok(t, truncation=True, max_length=max_tokens)["input_ids"] for t in texts) if r]
    for start in range(0, len(rows), IMATRIX_BATCH_ROWS):
        batch = rows[start:start + IMATRIX_BATCH_ROWS]
        width = max(map(len, batch))
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
        keep[0] = mask.reshape(-1).bool()
        streamed(torch.tensor([r + [0] * (width - len(r)) for r in batch]), mask)
        sink(Progress("imatrix", min(start + len(batch), len(rows)), len(rows)))
    if not sums:
        raise ExportError("no tokens to compute an imatrix from", hint="pass some non-empty calibration texts")
    writer = gguf.GGUFWriter(path=None, arch="imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", ["edgetune"])
    writer.add_uint32("imatrix.chunk_count", len(texts))
    writer.add_uint32("imatrix.chunk_size", max_tokens)
    for name in sorted(sums):
        writer.add_tensor(f"{name}.in_sum2", sums[name].numpy().astype(np.float32).reshape(1, -1))
        writer.add_tensor(f"{name}.counts", np.array([[counts[name]]], dtype=np.float32))
    write_gguf_atomically(writer, out_path, writer.write_tensors_to_file)
    return out_path


def _input_recorder(name: str, record):
    """A module that stands in for the output layer: records its input, returns one logit per position."""
    import torch

    class InputRecorder(torch.nn.Module):
        def forward(self, x):
            record(name, x)
            return x[..., :1]

    return InputRecorder()


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
