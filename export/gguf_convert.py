"""Hugging Face checkpoint (config.json + safetensors + tokenizer) -> GGUF file, on the PyPI `gguf` writer.

Follows what llama.cpp's convert_hf_to_gguf.py does for the families in export/families/ (one file each), without
torch:
tensors are read straight from the safetensors files (memory-mapped), converted one at a time and streamed to disk,
so peak memory is about one tensor. The file is written beside its destination and renamed into place at the end.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from edgetune.errors import ExportError
from edgetune.events import Note, Progress, null_sink

from .families import Family, family_for, gguf_support, text_config
from .gguf_vocab import write_vocab

OUTTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
_F32 = gguf.GGMLQuantizationType.F32
_BYTES_PER_VALUE = {gguf.GGMLQuantizationType.F32: 4, gguf.GGMLQuantizationType.F16: 2,
                    gguf.GGMLQuantizationType.BF16: 2}
_SKIPPED_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


@dataclass
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    source: gguf.utility.LocalTensor | None = None
    permute_heads: int = 0  # >0: apply llama.cpp's q/k row permutation with this many heads
    data: np.ndarray | None = None  # generated tensors (rope_freqs, rope_factors_*)
    family: Family | None = None  # its per-tensor transform (e.g. Gemma's norm + 1)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _BYTES_PER_VALUE[self.qtype]


@dataclass
class Plan:
    model_type: str
    family: Family
    config: dict
    tensors: list[PlannedTensor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def convert(model_dir: Path, out_path: Path, outtype: str = "f16", sink=null_sink) -> Path:
    """Convert a Hugging Face checkpoint folder to one GGUF file at out_path; returns out_path.

    outtype: f32 | f16 | bf16 for the 2-D weights (norms and other 1-D tensors stay f32, as llama.cpp expects).
    Nothing exists at out_path unless the whole file was written.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise ExportError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}",
                          hint="convert to f16 (or bf16/f32), then quantize with edgetune.export.quantize")
    qtype, ftype = OUTTYPES[outtype]
    plan = plan_conversion(model_dir, qtype)
    cfg = plan.config

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[plan.family.arch])
    _write_general(writer, model_dir, plan, ftype)
    plan.family.write_hparams(writer, cfg)
    vocab = write_vocab(writer, model_dir, n_vocab=cfg["vocab_size"])
    for tensor in plan.tensors:
        # a dtype other than uint8 makes gguf take the shape as given (uint8 means "already quantized bytes")
        writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, raw_dtype=tensor.qtype)

    estimate = plan.nbytes + (model_dir / "tokenizer.json").stat().st_size + (1 << 20)
    sink(Note(f"GGUF plan: {plan.model_type} -> arch {writer.arch}, {len(plan.tensors)} tensors, {outtype.upper()}, "
              f"~{estimate / 1e6:.0f} MB, tokenizer pre '{vocab.pre}' ({vocab.pre_source}), "
              f"{vocab.n_tokens} tokens{f', {vocab.n_merges} merges' if vocab.n_merges else ''} -> {out_path}"))
    for text in plan.notes + vocab.warnings:
        sink(Note(text, level="warning"))
    _check_disk(out_path.parent, estimate)
    _write_atomically(writer, plan, out_path, sink)
    return out_path


def plan_conversion(model_dir: Path, qtype: gguf.GGMLQuantizationType) -> Plan:
    """Read config.json and the safetensors headers; decide every output tensor's name, shape and type."""
    raw = read_config(model_dir)
    reason = gguf_support(raw)
    if reason is not None:
        raise ExportError(f"{model_dir / 'config.json'}: {reason}",
                          hint="pick a model of a supported family, or export ONNX / keep the merged checkpoint")
    cfg, family = text_config(raw), family_for(raw)
    plan = Plan(str(raw.get("model_type")), family, cfg)
    name_map = gguf.get_tensor_name_map(family.arch, cfg["num_hidden_layers"])
    n_head = cfg["num_attention_heads"]
    n_kv_head = cfg.get("num_key_value_heads") or n_head
    tied = bool(cfg.get("tie_word_embeddings", raw.get("tie_word_embeddings")))
    unmapped = []
    for source_name, local in _index_safetensors(model_dir).items():
        hf_name = _language_model_name(source_name)
        if hf_name is None or hf_name.endswith(_SKIPPED_SUFFIXES) or (tied and hf_name == "lm_head.weight"):
            continue  # vision towers; tied: llama.cpp reuses token_embd when output.weight is absent
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            unmapped.append(source_name)
            continue
        if local.dtype not in ("F32", "F16", "BF16"):
            raise ExportError(f"{source_name}: dtype {local.dtype} cannot be exported",
                              hint="save the merged model in float16, bfloat16 or float32 (no quantized weights)")
        permute = 0
        if family.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            permute = n_head
        elif family.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            permute = n_kv_head
        one_d = len(local.shape) <= 1 or name.endswith("_norm.weight")
        plan.tensors.append(PlannedTensor(name, tuple(local.shape), _F32 if one_d else qtype, local, permute, family=family))
    if unmapped:
        raise ExportError(f"{len(unmapped)} tensor(s) have no GGUF name for {plan.model_type}: {', '.join(unmapped[:5])}",
                          hint="export a plain merged causal-LM checkpoint (merge LoRA adapters first)")
    names = {t.name for t in plan.tensors}
    if "token_embd.weight" not in names:
        raise ExportError(f"{model_dir}: no embedding tensor (model.embed_tokens.weight) in the safetensors files",
                          hint="point at the folder written by save_pretrained of the merged model")
    if "output.weight" not in names and not tied:
        plan.notes.append("no lm_head.weight and tie_word_embeddings is not set: llama.cpp will tie the output "
                          "to the embeddings")
    plan.notes += family.notes(cfg)
    for name, data in family.extra_tensors(cfg):
        plan.tensors.insert(0, PlannedTensor(name, data.shape, _F32, data=data))
    plan.tensors.sort(key=_tensor_order)
    return plan


def _language_model_name(name: str) -> str | None:
    """A multimodal checkpoint's language-model tensor under its plain causal-LM name; None for vision parts."""
    for prefix, plain in (("model.language_model.", "model."), ("language_model.model.", "model."),
                          ("language_model.lm_head.", "lm_head.")):
        if name.startswith(prefix):
            return plain + name[len(prefix):]
    if name.startswith(("vision_tower.", "model.vision_tower.", "multi_modal_projector.",
                        "model.multi_modal_projector.")):
        return None
    return name


def _write_general(writer: gguf.GGUFWriter, model_dir: Path, plan: Plan, ftype: gguf.LlamaFileType) -> None:
    cfg = plan.config
    writer.add_type(gguf.GGUFType.MODEL)
    source_name = cfg.get("_name_or_path") or cfg.get("_model_name_or_path") or ""
    name = Path(source_name).name if source_name else model_dir.resolve().name
    writer.add_name(_rstrip_marked_name(name, model_dir))
    n_params = sum(math.prod(t.shape) for t in plan.tensors if t.source is not None)
    writer.add_size_label(gguf.size_label(n_params, n_params, 0, 0))
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _rstrip_marked_name(name: str, model_dir: Path) -> str:
    """llama.cpp lets special tokens swallow the whitespace after them (as Phi-3's tokenizer.json says with
    rstrip=true) only when general.name contains "phi-3" or "phi3": make the name say so exactly when it holds."""
    try:
        added = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
    except (OSError, ValueError):
        return name
    wants = any(a.get("special") and a.get("rstrip") for a in added)
    has = "phi-3" in name.lower() or "phi3" in name.lower()
    if wants and not has:
        return f"{name} (phi-3 tokenizer)"
    if has and not wants:
        return re.sub(r"(?i)phi-?3", "Phi_3", name)
    return name


def write_gguf_atomically(writer: gguf.GGUFWriter, out_path: Path, write_tensors) -> None:
    """Header, metadata, then `write_tensors()` into a temp file beside `out_path`, fsync'd and renamed over it.
    On any failure (Ctrl-C included) the temp file is removed and nothing appears at `out_path`."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        write_tensors()
        writer.flush()
        os.fsync(writer.fout[0].fileno())
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


def _write_atomically(writer: gguf.GGUFWriter, plan: Plan, out_path: Path, sink) -> None:
    def tensors():  # streamed one at a time: only one tensor's data is in memory
        writer.write_ti_data_to_file()
        total = len(plan.tensors)
        for i, tensor in enumerate(plan.tensors):
            writer.write_tensor_data(tensor_data(tensor))
            sink(Progress("gguf-convert", i + 1, total, tensor.name))

    write_gguf_atomically(writer, out_path, tensors)


def tensor_data(tensor: PlannedTensor) -> np.ndarray:
    """The bytes to write for one tensor: loaded from its safetensors range, permuted, cast to its GGUF type."""
    if tensor.data is not None:
        return tensor.data
    src = tensor.source
    raw = src.mmap_bytes()
    arr = raw.view({"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[src.dtype]).reshape(src.shape)
    if tensor.permute_heads:
        arr = _permute(arr, tensor.permute_heads)
    changed = tensor.family is not None and tensor.family.transforms(tensor.name)
    if tensor.qtype == gguf.GGMLQuantizationType.BF16 and src.dtype == "BF16" and not changed:
        return arr  # same bits
    if src.dtype == "BF16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    if changed:
        arr = tensor.family.transform(tensor.name, arr)
    if tensor.qtype == gguf.GGMLQuantizationType.BF16:
        return gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), tensor.qtype)
    dtype = np.float32 if tensor.qtype == _F32 else np.float16
    return arr.astype(dtype, copy=False)


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF q/k rows hold each head's rotary halves [x0..x(d/2-1) | x(d/2)..]; llama.cpp wants them interleaved."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _index_safetensors(model_dir: Path) -> dict[str, gguf.utility.LocalTensor]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = sorted(p.name for p in model_dir.glob("model*.safetensors"))
    if not files:
        hint = ("save with model.save_pretrained(dir) (safetensors is the default)"
                if list(model_dir.glob("pytorch_model*.bin")) else "point at the merged model folder")
        raise ExportError(f"{model_dir}: no model*.safetensors files", hint=hint)
    tensors: dict[str, gguf.utility.LocalTensor] = {}
    for name in files:
        path = model_dir / name
        if not path.is_file():
            raise ExportError(f"{path}: listed in model.safetensors.index.json but missing",
                              hint="copy every shard of the checkpoint")
        tensors.update(gguf.utility.SafetensorsLocal(path).tensors)
    return tensors


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{model_dir}: no config.json", hint="point at a folder written by save_pretrained")
    raw = json.loads(path.read_text(encoding="utf-8"))
    cfg = text_config(raw)  # multimodal wrappers keep the text model's settings nested
    missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                           "max_position_embeddings", "rms_norm_eps", "vocab_size") if k not in cfg]
    if missing and family_for(raw) is not None:
        raise ExportError(f"{path}: missing {', '.join(missing)}", hint="re-save the model with transformers")
    return raw


def _check_disk(folder: Path, need: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ExportError(f"not enough disk space in {folder}: the GGUF needs ~{need / 1e9:.2f} GB, "
                          f"{free / 1e9:.2f} GB free", hint="free some space or choose another output folder")


def _tensor_order(t: PlannedTensor) -> tuple:
    parts = t.name.split(".")
    if parts[0] == "blk":
        return (1, int(parts[1]), t.name)
    return (0 if t.name in ("rope_freqs.weight", "token_embd.weight") or t.name.startswith("rope_factors") else 2,
            0, t.name)
