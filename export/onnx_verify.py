"""The verification gate after an ONNX export: does each variant behave like the merged HF model?

The same checks and thresholds as the GGUF gate (export/verify.py), run in onnxruntime: KL(HF || ONNX) per position
(mean and worst) and top-1 agreement over held-out texts fed as the HF tokenizer's ids, greedy chat replies (repeat
penalty as deployed) that end at EOS, every stop id ending generation, and the copied tokenizer reproducing the HF
ids. fp32 must stay within the F16 GGUF budget (mean <= 1e-4, worst position <= 1e-2) or the export fails;
fp16/int8/int4 report their numbers.
"""
from __future__ import annotations

from pathlib import Path

from edgetune.sampling import REPEAT_PENALTY
from edgetune.errors import ExportError
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

from .verify import (CHAT_MAX_TOKENS, DEFAULT_CHAT_PROMPTS, FIXED_TOKENIZER_TEXTS, MAX_MEAN_KLD, MAX_POSITION_KLD,
                     HFReference, compare_logits, heldout_texts)

GATED = ("fp32",)  # judged like a full-precision GGUF: by KL divergence to the merged model (verify.py says why)
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
    from .onnx_runtime import OnnxBackend

    folder = Path(folder)
    sink(Note(f"verifying onnx/{folder.name} ({variant}): {len(texts)} comparison texts, {len(chat_prompts)} chat prompts"))
    backend = OnnxBackend(folder)
    mismatches = token_mismatches(backend.tokenizer, ref)
    agreement = compare_logits(backend.model.logits, ref, texts, TIE_NATS.get(variant, 0.0), sink)
    reasons, replies = [], []
    for i, prompt in enumerate(chat_prompts):
        reply = "".join(backend.stream([{"role": "user", "content": prompt}], CHAT_MAX_TOKENS, 0.0))
        reasons.append(backend.finish_reason)
        replies.append(reply[:200])
        sink(Progress("verify", i + 1, len(chat_prompts), "chat"))
    missing_stops = [i for i in ref.stop_ids() if i not in backend.eos_ids]
    genai = genai_checks(folder, backend, ref, chat_prompts[:1])
    result = {
        "type": variant,
        "path": str(folder),
        "size_bytes": dir_size(folder),
        "token_ids_identical": not mismatches,
        "token_mismatches": mismatches[:3],
        "top1": round(agreement.top1, 5),
        "top1_ties_ok": round(agreement.top1_ties, 5),
        "mean_kld": float(f"{agreement.mean_kld:.3g}"),
        "max_kld": float(f"{agreement.max_kld:.3g}"),
        "positions": agreement.positions,
        "stops_at_eos": all(r == "stop" for r in reasons) if reasons else None,
        "finish_reasons": reasons,
        "replies": replies,
        "repeat_penalty": REPEAT_PENALTY,
        "end_of_turn_stops": not missing_stops,  # every stop id of the merged model ends ONNX generation
        "stops_not_eos": [ref.tokenizer.convert_ids_to_tokens(i) for i in missing_stops],
        "chat_template_present": bool(getattr(backend.tokenizer, "chat_template", None)),
        **genai,
    }
    result["fidelity_failures"] = fidelity_failures(result)
    behaviour = [] if result["stops_at_eos"] is not False else [
        f"{reasons.count('length')} of {len(reasons)} greedy chat replies did not stop within {CHAT_MAX_TOKENS} tokens"]
    result["failures"] = result["fidelity_failures"] + behaviour
    result["passed"] = not result["failures"]
    sink(Note(f"onnx/{folder.name}: mean KLD {agreement.mean_kld:.2e} (worst {agreement.max_kld:.2e}), top-1 "
              f"{agreement.top1:.4f} over {agreement.positions} positions, stops at EOS {result['stops_at_eos']}",
              level="info" if result["passed"] else "warning"))
    return result


def genai_checks(folder: Path, backend, ref: HFReference, prompts: list[str]) -> dict:
    """onnxruntime-genai on the folder as written: og.Tokenizer ids equal the merged model's on the fixed texts, and
    og.Generator's greedy reply (no repeat penalty) equals edgetune's own decode loop's, token for token."""
    from .onnx_genai import genai_greedy, genai_token_mismatches

    mismatches = genai_token_mismatches(folder, FIXED_TOKENIZER_TEXTS, ref.plain_ids)
    same = []
    for prompt in prompts:
        ids = backend.prompt_ids([{"role": "user", "content": prompt}])
        ours = list(backend.model.generate(ids, CHAT_MAX_TOKENS, 0.0, 1.0, backend.eos_ids))
        same.append(list(genai_greedy(folder, ids, CHAT_MAX_TOKENS)) == ours)
    return {"genai_token_ids_identical": not mismatches, "genai_token_mismatches": mismatches[:3],
            "genai_greedy_identical": all(same) if same else None}


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
    if r["type"] in GATED and (r["mean_kld"] > MAX_MEAN_KLD["f32"] or r["max_kld"] > MAX_POSITION_KLD["f32"]):
        out.append(f"next-token distributions differ from the merged model: mean KL divergence {r['mean_kld']:.2e} "
                   f"(allowed {MAX_MEAN_KLD['f32']:.0e}), worst position {r['max_kld']:.2e} (allowed "
                   f"{MAX_POSITION_KLD['f32']:.0e}) over {r['positions']} positions; top-1 {r['top1']:.4f}")
    if not r["token_ids_identical"]:
        first = r["token_mismatches"][0]
        out.append(f"the tokenizer next to the model gives other ids than the merged model's on {first['text'][:40]!r}")
    if not r["chat_template_present"]:
        out.append("no chat template next to the model (chat would use a wrong format)")
    if not r.get("genai_token_ids_identical", True):
        first = r["genai_token_mismatches"][0]
        out.append(f"onnxruntime-genai's tokenizer gives other ids than the merged model's on {first['text'][:40]!r}")
    if r.get("genai_greedy_identical") is False:
        out.append("onnxruntime-genai's greedy reply differs from edgetune's decode loop on the same model")
    if not r["end_of_turn_stops"]:
        out.append(f"ONNX generation does not stop at {', '.join(r['stops_not_eos'])} (a stop token of this model)")
    return out


def check_onnx_gate(result: dict) -> None:
    """Raise ExportError when the fp32 export does not reproduce the merged model (other variants only report)."""
    if result["type"] not in GATED or not result.get("fidelity_failures"):
        return
    raise ExportError(
        f"onnx/{result['type']} does not behave like the merged model: " + "; ".join(result["fidelity_failures"]),
        hint="an fp32 ONNX export must match transformers; do not ship quantized variants made alongside it. Check "
             "merged/ (config.json, tokenizer files, chat template) and report the architecture if it persists")


def dir_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
