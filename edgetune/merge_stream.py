"""Streaming merge: base safetensors + LoRA adapter -> 16-bit safetensors shards, one tensor at a time.

For a QLoRA run the base weight is what training saw: each weight bitsandbytes quantized is NF4-quantized and
dequantized exactly as at load time (same block size, double quantization, dtype), one tensor at a time. Then the
adapter's delta is added in fp32 (LoRA: scale * B @ A with scale alpha/r, rsLoRA alpha/sqrt(r); DoRA rescales each
output row to its learned magnitude), as PEFT's merge_and_unload computes it. Peak memory is a few of the largest
weights, not the model: 1B and 3B models merge on a laptop that could not hold them in fp32.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgetune.engines.hf import bnb_config
from edgetune.errors import ExportError
from edgetune.events import Progress, null_sink
from edgetune.safetensors_io import CODE, checkpoint_index, read_header, read_tensor, ShardedWriter

PREFIX = "base_model.model."
CHUNK_BYTES = 64 * 1024**2  # copies of large unmerged tensors (embeddings) go in row chunks of about this size
FLOAT_CODES = ("F32", "F16", "BF16")


@dataclass
class LoraDelta:
    a: object  # (r, in) fp32
    b: object  # (out, r) fp32
    scale: float
    magnitude: object | None = None  # DoRA: (out,) learned row norms

    def merge(self, weight):
        """weight (fp32, out x in) + the adapter, as PEFT merges it."""
        merged = weight + (self.b @ self.a) * self.scale
        if self.magnitude is None:
            return merged
        import torch

        norm = torch.linalg.norm(merged, dim=1)  # PEFT's DoRA weight norm, per output row
        return merged * (self.magnitude / norm).view(-1, 1)


def read_adapter(adapter_dir: Path) -> dict[str, LoraDelta]:
    """The adapter's deltas by the base weight name they change (e.g. model.layers.0.mlp.up_proj.weight)."""
    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    unsupported = [k for k in ("rank_pattern", "alpha_pattern", "modules_to_save") if cfg.get(k)]
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("fan_in_fan_out") or cfg.get("lora_bias") or unsupported:
        raise ExportError(f"{adapter_dir}: adapter settings the streaming merge does not handle "
                          f"({', '.join(unsupported) or cfg.get('peft_type')})",
                          hint="merge it with PEFT's merge_and_unload in a script, or retrain with edgetune's LoRA settings")
    tensors = {n: read_tensor(e).float() for n, e in read_header(adapter_dir / "adapter_model.safetensors").items()}
    deltas: dict[str, LoraDelta] = {}
    for name in tensors:
        if not name.endswith(".lora_A.weight"):
            if not name.endswith((".lora_B.weight", ".lora_magnitude_vector")):
                raise ExportError(f"{adapter_dir}: adapter tensor {name} is not a LoRA matrix of a linear layer",
                                  hint="keep lora.target_modules to linear layers (the default all-linear does)")
            continue
        module = name.removeprefix(PREFIX).removesuffix(".lora_A.weight")
        a, b = tensors[name], tensors[name.replace(".lora_A.", ".lora_B.")]
        r = a.shape[0]
        scale = cfg["lora_alpha"] / (math.sqrt(r) if cfg.get("use_rslora") else r)
        deltas[f"{module}.weight"] = LoraDelta(a, b, scale, tensors.get(f"{PREFIX}{module}.lora_magnitude_vector"))
    return deltas


def quantized_weight_names(model_dir: Path, trust_remote_code: bool = False) -> set[str]:
    """The weights transformers turns into bitsandbytes 4-bit layers when it loads this model in 4-bit: asked of
    transformers' own quantizer on a weightless (meta) copy of the model, so the rule cannot drift from training's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers.auto import AutoHfQuantizer

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    quantizer = AutoHfQuantizer.from_config(bnb_config(torch.float32))
    quantizer.preprocess_model(model, device_map="cpu")
    return {f"{n}.weight" for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"}


def nf4_roundtrip(weight, dtype, device: str = "cpu", store: "NF4Store | None" = None, name: str = ""):
    """The weight as a 4-bit NF4 (double-quantized, block 64) layer holds it, in fp32: what training saw.
    With a `store`, the packed 4-bit weight is kept there under `name` for a later `store.load(name)`."""
    import bitsandbytes.functional as F

    w = weight.to(device=device, dtype=dtype)
    q, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    if store is not None:
        store.save(name, q, state)
    return F.dequantize_4bit(q, state).float().cpu()


class NF4Store:
    """Packed NF4 weights (half a byte per weight) kept in a folder between the merge and its check.
    bitsandbytes' CPU quantization is the merge's slowest step (~0.6 s per 16.8M weights, 2026-12) while
    dequantizing is ~15x faster, and the check needs exactly the weights the merge rounded."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Path] = {}

    def save(self, name: str, q, state) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.cpu().contiguous() for k, v in state.as_dict(packed=True).items()}
        tensors["q"] = q.cpu().contiguous()
        path = self.dir / f"{name}.safetensors"  # the same name again (a bf16 retry) replaces its file
        save_file(tensors, str(path))
        self._files[name] = path

    def load(self, name: str):
        """The fp32 weight the merge rounded, or None when it was not kept."""
        if name not in self._files:
            return None
        import bitsandbytes.functional as F
        from safetensors.torch import load_file

        tensors = load_file(str(self._files[name]))
        q = tensors.pop("q")
        return F.dequantize_4bit(q, F.QuantState.from_dict(tensors, device="cpu")).float()


def stream_merge(base_dir: Path, adapter_dir: Path, out_dir: Path, out_dtype, quantized: set[str] = frozenset(),
                 load_dtype=None, device: str = "cpu", sink=null_sink, store: NF4Store | None = None) -> None:
    """Write the merged checkpoint's weights into out_dir (model*.safetensors [+ index]) and its config.json;
    the packed 4-bit weights go into `store` when one is given (for the merge check)."""
    import torch

    index = checkpoint_index(base_dir)
    if not index:
        raise ExportError(f"{base_dir}: no .safetensors weights to merge into",
                          hint="the base must be a safetensors checkpoint (transformers' save_pretrained writes one)")
    deltas = read_adapter(adapter_dir)
    missing = sorted(set(deltas) - set(index))
    if missing:
        raise ExportError(f"the adapter changes {missing[0]} (+{len(missing) - 1} more), which {base_dir} does not "
                          "store under that name", hint="merge with the base checkpoint the adapter was trained on")
    out_code = CODE[str(out_dtype).removeprefix("torch.")]
    plan = {n: (out_code if e.dtype in FLOAT_CODES else e.dtype, e.shape) for n, e in index.items()}
    out_dir = Path(out_dir)
    writer = ShardedWriter(out_dir, plan)
    try:
        for i, (name, entry) in enumerate(index.items(), 1):
            if name in deltas or name in quantized:
                w = read_tensor(entry).to(load_dtype or torch.float32)
                w = (nf4_roundtrip(w, load_dtype or torch.float32, device, store, name) if name in quantized
                     else w.float())
                if name in deltas:
                    w = deltas[name].merge(w)
                writer.write(name, _cast(name, w, out_dtype))
            else:
                _copy(writer, name, entry, out_dtype if entry.dtype in FLOAT_CODES else None)
            if i % 16 == 0 or i == len(index):
                sink(Progress("merge", i, len(index), f"merging tensors ({i}/{len(index)})"))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    write_config(base_dir, out_dir, str(out_dtype).removeprefix("torch."))


def _copy(writer: ShardedWriter, name: str, entry, dtype) -> None:
    rows = entry.shape[0] if entry.shape else 1
    step = max(1, CHUNK_BYTES // max(entry.nbytes // max(rows, 1), 1))
    if not entry.shape:
        writer.write(name, _cast(name, read_tensor(entry), dtype) if dtype is not None else read_tensor(entry))
        return
    for start in range(0, rows, step):
        part = read_tensor(entry, (start, min(rows, start + step)))
        writer.write(name, _cast(name, part, dtype) if dtype is not None else part, row_offset=start)


class FP16RangeError(OverflowError):
    """A weight does not fit float16's range (|x| > 65504): merge to bfloat16 instead."""


def _cast(name: str, tensor, dtype):
    import torch

    out = tensor.to(dtype)
    if dtype == torch.float16 and not torch.isfinite(out).all() and torch.isfinite(tensor).all():
        raise FP16RangeError(name)
    return out


def write_config(base_dir: Path, out_dir: Path, dtype: str) -> None:
    """config.json without the quantization block and with the merged dtype; generation config and any custom
    modelling code (trust_remote_code models) copied as they are."""
    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    config.pop("quantization_config", None)
    config["dtype"] = dtype
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype
    (Path(out_dir) / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for extra in ["generation_config.json", *[p.name for p in Path(base_dir).glob("*.py")]]:
        if (Path(base_dir) / extra).is_file():
            shutil.copy2(Path(base_dir) / extra, Path(out_dir) / extra)


def attach_unmerged(model, deltas: dict[str, LoraDelta]) -> None:
    """Add each adapter's path beside its linear layer, unmerged, the way PEFT runs it in training:
    LoRA y = Wx + b + s·B(Ax); DoRA y = (m / ||W + s·BA||_row) ⊙ (Wx + s·B(Ax)) + b."""
    import torch

    for name, module in model.named_modules():
        delta = deltas.get(f"{name}.weight")
        if delta is None:
            continue

        def hook(module, args, output, delta=delta):
            x = args[0]
            lora = (x.to(delta.a.dtype) @ delta.a.T @ delta.b.T) * delta.scale
            bias = module.bias if getattr(module, "bias", None) is not None else 0
            if delta.magnitude is None:
                return output + lora.to(output.dtype)
            w = module.weight.float()
            factor = delta.magnitude / torch.linalg.norm(w + (delta.b @ delta.a) * delta.scale, dim=1)
            return (factor * (output - bias + lora) + bias).to(output.dtype)

        module.register_forward_hook(hook)
