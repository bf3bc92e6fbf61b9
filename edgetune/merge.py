"""The merge stage: the adapter merged into the 16-bit base, streamed tensor by tensor, saved as merged/.

Never merge into 4-bit weights: re-quantizing after the merge throws away part of what was trained. For a QLoRA run
the base is what training saw (each 4-bit weight NF4-rounded exactly as bitsandbytes held it), merged in fp32 and
saved in 16-bit (edgetune/merge_stream.py): memory stays at a few tensors whatever the model size. The report gives
the largest logit difference between the saved merged model and base + unmerged adapter, both run layer by layer.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetune import runs
from edgetune.runs import load_run_config, update_report
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

CHECK_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Give me three tips for sleeping better.",
]
CHECK_METHOD = ("saved merged model vs base as trained + unmerged adapter (LoRA path computed apart, as PEFT runs it), "
                "fp32 forward read layer by layer from disk, over {n} chat prompts")


@dataclass
class MergeResult:
    merged_dir: str
    dtype: str
    max_logit_diff: float
    mean_logit_diff: float
    seconds: float
    check: str = ""


def merge_dtype(choice: str) -> str:
    """auto: fp16, the precision of the F16 GGUF made from it (bf16 would round the merged weights to 8 mantissa bits
    before the GGUF's 11: measured on a Llama-3.2-1B shape, largest merge logit difference 0.46 in bf16 vs 0.009 in
    fp16); merge() falls back to bf16 when a weight does not fit fp16's range."""
    return "fp16" if choice == "auto" else choice


def check_inputs(tokenizer):
    """The check prompts as one right-padded batch: (input_ids, attention_mask, lengths)."""
    import torch

    rows = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"] for p in CHECK_PROMPTS]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask, [len(r) for r in rows]


def merge(run_dir: Path, sink=null_sink) -> MergeResult:
    import shutil

    from edgetune import base_identity, hardware
    from edgetune.engines import choose_precision
    from edgetune.merge_stream import FP16RangeError, NF4Store, quantized_weight_names
    from edgetune.tokenizer import load_tokenizer

    t0 = time.time()
    run_dir = runs.require_run_dir(run_dir, runs.ADAPTER)
    cfg = load_run_config(run_dir)
    adapter = run_dir / runs.ADAPTER
    sink(StageStarted("merge", str(run_dir)))
    hw = hardware.detect(run_dir)
    precision = choose_precision(cfg.train.precision, hw)  # the dtype training loaded (and 4-bit quantized) the base in
    base_dir = base_identity.trained_base(run_dir, cfg, sink)  # exactly the weights training saw
    tokenizer = load_tokenizer(adapter)  # the tokenizer (and chat template) training saved
    quantized = quantized_weight_names(base_dir, cfg.model.trust_remote_code) if cfg.model.load_in_4bit else set()
    dtype = merge_dtype(cfg.export.merge_dtype)
    final = run_dir / runs.MERGED
    store = NF4Store(runs.temp_dir_beside(final))  # the packed 4-bit weights, shared by the merge and its check
    try:
        try:
            tmp = _merge_into_temp(base_dir, adapter, final, dtype, quantized, precision, hw, tokenizer, sink, store)
        except FP16RangeError as e:
            sink(Note(f"{e.args[0]} does not fit float16's range: merging in bf16 instead", "warning"))
            dtype = "bf16"
            tmp = _merge_into_temp(base_dir, adapter, final, dtype, quantized, precision, hw, tokenizer, sink, store)
        runs.replace_dir(tmp, final)

        sink(Progress("merge", 1, 1, "checking merged logits"))
        max_diff, mean_diff = check_merge(base_dir, adapter, final, tokenizer, quantized, precision.torch_dtype,
                                          cfg.model.trust_remote_code, store)
    finally:
        shutil.rmtree(store.dir, ignore_errors=True)  # Ctrl-C included
    result = MergeResult(str(final), dtype, max_diff, mean_diff, time.time() - t0,
                         CHECK_METHOD.format(n=len(CHECK_PROMPTS)))
    sink(Note(f"merged {dtype} model saved to {final}; largest logit difference vs base+adapter "
              f"{result.max_logit_diff:.4f} (mean {result.mean_logit_diff:.5f})"))
    update_report(run_dir, "merge", asdict(result))
    sink(StageFinished("merge", result.seconds))
    return result


def _merge_into_temp(base_dir, adapter, final, dtype, quantized, precision, hw, tokenizer, sink, store) -> Path:
    """The merged checkpoint written into a temp folder beside `final`; nothing half-written stays on failure."""
    import shutil

    import torch

    from edgetune.merge_stream import stream_merge

    sink(Progress("merge", 0, 1, f"merging into a {dtype} copy of the base, tensor by tensor"))
    tmp = runs.temp_dir_beside(final)
    try:
        stream_merge(base_dir, adapter, tmp, {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype],
                     quantized, precision.torch_dtype, hw.device, sink, store)
        tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # Ctrl-C or a failure leaves no half-written merged/
        raise
    return tmp


def check_merge(base_dir, adapter, merged_dir, tokenizer, quantized, load_dtype, trust_remote_code=False,
                store=None):
    """(max, mean) |logit difference| between the saved merged model and base + unmerged adapter; 4-bit weights
    come from the merge's NF4Store when given (the same rounding, without quantizing again)."""
    import torch

    from edgetune.merge_stream import attach_unmerged, nf4_roundtrip, read_adapter
    from edgetune.streamed import StreamedCausalLM

    ids, mask, lengths = check_inputs(tokenizer)

    def as_trained(name, tensor):  # element-wise except for 4-bit weights (never the output layer)
        if name in quantized:
            kept = store.load(name) if store is not None else None
            return kept if kept is not None else nf4_roundtrip(tensor, load_dtype)
        return tensor.to(load_dtype) if tensor.dtype != load_dtype and load_dtype != torch.float32 else tensor

    trained = StreamedCausalLM(base_dir, transform=as_trained, trust_remote_code=trust_remote_code)
    attach_unmerged(trained.model, read_adapter(adapter))
    reference = trained(ids, mask).logits
    merged = StreamedCausalLM(merged_dir, trust_remote_code=trust_remote_code)(ids, mask).logits
    diffs = [(merged[i, :n] - reference[i, :n]).abs() for i, n in enumerate(lengths)]
    return max(float(d.max()) for d in diffs), sum(float(d.mean()) for d in diffs) / len(diffs)
