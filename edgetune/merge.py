"""The merge stage: dequantize the (4-bit) base to 16-bit, merge the LoRA adapter into it, save merged/.

Never merge into 4-bit weights: re-quantizing after the merge throws away part of what was trained. The report
gives the largest logit difference between the saved merged model and base+adapter as trained.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetune import runs
from edgetune.config import RunConfig, read_toml, from_dict
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

CHECK_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Give me three tips for sleeping better.",
]


@dataclass
class MergeResult:
    merged_dir: str
    dtype: str
    max_logit_diff: float
    mean_logit_diff: float
    seconds: float


def load_run_config(run_dir: Path) -> RunConfig:
    cfg = from_dict(read_toml(Path(run_dir) / runs.CONFIG), str(Path(run_dir) / runs.CONFIG))
    cfg.run_dir = str(run_dir)
    return cfg


def merge_dtype(choice: str, base_config) -> str:
    if choice != "auto":
        return choice
    dtype = str(getattr(base_config, "dtype", None) or getattr(base_config, "torch_dtype", "") or "")
    return "bf16" if "bfloat16" in dtype else "fp16"


def check_inputs(tokenizer) -> list:
    import torch

    ids = []
    for p in CHECK_PROMPTS:
        msgs = [{"role": "user", "content": p}]
        enc = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids.append(torch.tensor([enc["input_ids"]]))
    return ids


def logits_for(model, inputs) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=x.to(model.device)).logits.float().cpu() for x in inputs]


def merge(run_dir: Path, sink=null_sink) -> MergeResult:
    import torch
    from peft import PeftModel

    from edgetune import hardware, models
    from edgetune.engines import choose_precision
    from edgetune.engines.hf import HFEngine

    t0 = time.time()
    run_dir = runs.require_run_dir(run_dir, runs.ADAPTER)
    cfg = load_run_config(run_dir)
    adapter = run_dir / runs.ADAPTER
    sink(StageStarted("merge", str(run_dir)))
    hw = hardware.detect(run_dir)
    # fp32 compute on CPU; on CUDA the training precision. The merge itself runs in this dtype.
    precision = choose_precision(cfg.train.precision if hw.device == "cuda" else "fp32", hw)
    resolved = models.resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code, sink)
    engine = HFEngine()
    tokenizer = engine.load_tokenizer(resolved, cfg)
    tokenizer = type(tokenizer).from_pretrained(adapter)  # the tokenizer (and chat template) training saved
    sink(Progress("merge", 1, 5, "loading base as trained"))
    base = engine.load_base(resolved, cfg, precision)
    inputs = check_inputs(tokenizer)
    trained = PeftModel.from_pretrained(base, adapter)
    reference = logits_for(trained, inputs)
    base = trained.unload()  # drop the LoRA layers again, keep the (4-bit) base
    if cfg.model.load_in_4bit:
        sink(Progress("merge", 2, 5, "dequantizing 4-bit base"))
        base = dequantize_4bit_model(base, precision.torch_dtype)
    sink(Progress("merge", 3, 5, "merging adapter"))
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    dtype = merge_dtype(cfg.export.merge_dtype, merged.config)
    merged = merged.to({"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    if getattr(merged.config, "quantization_config", None) is not None:
        del merged.config.quantization_config
    sink(Progress("merge", 4, 5, f"saving {dtype} safetensors"))
    final = run_dir / runs.MERGED
    tmp = runs.temp_dir_beside(final)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    runs.replace_dir(tmp, final)
    del merged, trained, base

    sink(Progress("merge", 5, 5, "checking merged logits"))
    from transformers import AutoModelForCausalLM

    check = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32, device_map="cpu" if hw.device == "cpu" else {"": 0})
    diffs = [(a - b).abs() for a, b in zip(logits_for(check, inputs), reference)]
    result = MergeResult(str(final), dtype, max(float(d.max()) for d in diffs),
                         sum(float(d.mean()) for d in diffs) / len(diffs), time.time() - t0)
    sink(Note(f"merged {dtype} model saved to {final}; largest logit difference vs base+adapter "
              f"{result.max_logit_diff:.4f} (mean {result.mean_logit_diff:.5f})"))
    update_report(run_dir, "merge", asdict(result))
    sink(StageFinished("merge", result.seconds))
    return result


def dequantize_4bit_model(model, dtype):
    """Replace every bitsandbytes Linear4bit by an nn.Linear holding its exact NF4 values.

    Not `model.dequantize()`: transformers 5.17 dequantizes through bfloat16, which moved weights of a test model by
    up to 0.12; bitsandbytes' own dequantize_4bit in fp32 is exact.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                w = F.dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype)
                lin = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                      device=w.device, dtype=dtype)
                with torch.no_grad():
                    lin.weight.copy_(w)
                    if child.bias is not None:
                        lin.bias.copy_(child.bias.to(dtype))
                setattr(module, child_name, lin)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # else .to(dtype) and save_pretrained refuse
    model.is_loaded_in_4bit = False
    return model


def update_report(run_dir: Path, key: str, value) -> None:
    """report.json accumulates one section per stage (merge, export, eval)."""
    path = Path(run_dir) / runs.REPORT
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[key] = value
    runs.atomic_write_text(path, json.dumps(data, indent=2, default=str))
