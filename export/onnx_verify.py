"""The verification gate after an ONNX export: does each variant behave like the merged HF model?

The same checks and thresholds as the GGUF gate (export/verify.py), run in onnxruntime: next-token top-1 agreement
and mean KL(HF || ONNX) over held-out texts fed as the HF tokenizer's ids, greedy chat replies (repeat penalty as
deployed) that end at EOS, and the copied tokenizer reproducing the HF ids. fp32 must reach top-1 >= 0.999 (HF
near-ties within 0.01 nats allowed) or the export fails; fp16/int8/int4 report their numbers.
"""
from __future__ import annotations

from pathlib import Path

from edgetune.chat import REPEAT_PENALTY
from edgetune.errors import ExportError
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

from .verify import (CHAT_MAX_TOKENS, DEFAULT_CHAT_PROMPTS, FIXED_TOKENIZER_TEXTS, TOP1_MIN, HFReference,
                     compare_logits, heldout_texts)

GATED = ("fp32",)
TIE_NATS = {"fp32": 0.01, "fp16": 0.05}  # fp16 rounds like BF16-ish weights; quantized variants: strict ties only


def verify_variants(run_dir: Path | None, dirs: dict[str, Path], sink=null_sink, ref: HFReference | None = None,
                    texts: list[str] | None = None, chat_prompts: list[str] | None = None) -> list[dict]:
    """Verify every exported folder against one HFReference (built from RUN_DIR/merged when not given)."""
    import time

    from edgetune import runs

    t0 = time.time()
    ref = ref or HFReference(Path(run_dir) / runs.MERGED)
    texts = texts if texts is not None else heldout_texts(run_dir, ref.tokenizer, sink=sink)
    prompts = DEFAULT_CHAT_PROMPTS if chat_prompts is None else chat_prompts
    sink(StageStarted("verify", f"{len(dirs)} ONNX variant(s) against the merged model"))
    results = []
    for variant, folder in dirs.items():
        results.append(verify_onnx(folder, ref, texts, prompts, variant, sink))
    sink(StageFinished("verify", time.time() - t0))
    return results


def verify_onnx(folder: Path, ref: HFReference, texts: list[str], chat_prompts: list[str], variant: str,
                sink=null_sink) -> dict:
    """Check one exported folder against `ref`; a JSON-able result (check_onnx_gate says what must hold)."""
    from .onnx_export import dir_size
    from .onnx_runtime import OnnxBackend

    folder = Path(folder)
    sink(Note(f"verifying onnx/{folder.name} ({variant}): {len(texts)} comparison texts, {len(chat_prompts)} chat prompts"))
    backend = OnnxBackend(folder)
    mismatches = token_mismatches(backend.tokenizer, ref)
    top1, top1_ties, kld, positions = compare_logits(backend.model.logits, ref, texts, TIE_NATS.get(variant, 0.0), sink)
    reasons, replies = [], []
    for i, prompt in enumerate(chat_prompts):
        reply = "".join(backend.stream([{"role": "user", "content": prompt}], CHAT_MAX_TOKENS, 0.0))
        reasons.append(backend.finish_reason)
        replies.append(reply[:200])
        sink(Progress("verify", i + 1, len(chat_prompts), "chat"))
    eot = ref.end_of_turn_id()
    result = {
        "type": variant,
        "path": str(folder),
        "size_bytes": dir_size(folder),
        "token_ids_identical": not mismatches,
        "token_mismatches": mismatches[:3],
        "top1": round(top1, 5),
        "top1_ties_ok": round(top1_ties, 5),
        "mean_kld": round(max(kld, 0.0), 6),
        "positions": positions,
        "stops_at_eos": all(r == "stop" for r in reasons) if reasons else None,
        "finish_reasons": reasons,
        "replies": replies,
        "repeat_penalty": REPEAT_PENALTY,
        "end_of_turn_stops": eot is None or eot in backend.eos_ids,
        "chat_template_present": bool(getattr(backend.tokenizer, "chat_template", None)),
    }
    result["fidelity_failures"] = fidelity_failures(result)
    behaviour = [] if result["stops_at_eos"] is not False else [
        f"{reasons.count('length')} of {len(reasons)} greedy chat replies did not stop within {CHAT_MAX_TOKENS} tokens"]
    result["failures"] = result["fidelity_failures"] + behaviour
    result["passed"] = not result["failures"]
    sink(Note(f"onnx/{folder.name}: top-1 {top1:.4f} (ties ok {top1_ties:.4f}), KLD {kld:.5f} over {positions} "
              f"positions, stops at EOS {result['stops_at_eos']}", level="info" if result["passed"] else "warning"))
    return result


def token_mismatches(tokenizer, ref: HFReference) -> list[dict]:
    """The tokenizer saved next to the model must give the merged model's ids (it is a copy; this checks the copy)."""
    out = []
    for text in FIXED_TOKENIZER_TEXTS:
        hf, ours = ref.plain_ids(text), list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if hf != ours:
            out.append({"text": text, "hf": hf, "onnx": ours})
    return out


def fidelity_failures(r: dict) -> list[str]:
    out = []
    if r["type"] in GATED and r["top1_ties_ok"] < TOP1_MIN:
        out.append(f"next-token top-1 agreement {r['top1_ties_ok']:.4f} < {TOP1_MIN} over {r['positions']} positions "
                   f"(strict {r['top1']:.4f}, mean KLD {r['mean_kld']:.5f})")
    if not r["token_ids_identical"]:
        first = r["token_mismatches"][0]
        out.append(f"the tokenizer next to the model gives other ids than the merged model's on {first['text'][:40]!r}")
    if not r["chat_template_present"]:
        out.append("no chat template next to the model (chat would use a wrong format)")
    if not r["end_of_turn_stops"]:
        out.append("the chat template's end-of-turn token is not an EOS id of the exported model")
    return out


def check_onnx_gate(result: dict) -> None:
    """Raise ExportError when the fp32 export does not reproduce the merged model (other variants only report)."""
    if result["type"] not in GATED or not result.get("fidelity_failures"):
        return
    raise ExportError(
        f"onnx/{result['type']} does not behave like the merged model: " + "; ".join(result["fidelity_failures"]),
        hint="an fp32 ONNX export must match transformers; do not ship quantized variants made alongside it. Check "
             "merged/ (config.json, tokenizer files, chat template) and report the architecture if it persists")
