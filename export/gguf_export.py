"""`edgetune export RUN_DIR --gguf TYPE ...`: merge if needed, convert to F16, quantize, verify every file, write the
Modelfile and the report.

Offline by construction: the converter is ours (PyPI `gguf`), quantization is llama.cpp's library code through
llama-cpp-python; nothing is cloned, compiled or downloaded. Every file appears atomically at its final path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgetune import runs
from edgetune.events import Note, StageFinished, StageStarted, null_sink

from .types import GGUF_TYPES, parse_choices

# Candidates for `--gguf auto`, largest first; the smallest under the KLD budget wins.
AUTO_CANDIDATES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_k_s", "q3_k_m", "q2_k")
IMATRIX_TYPES = ("q5_k_m", "q4_k_m", "q4_k_s", "q3_k_m", "q2_k")  # where an importance matrix measurably helps
CALIBRATION_ROWS = 32


@dataclass
class ExportResult:
    files: list[Path]
    results: list[dict]
    chosen: str | None = None  # the type `auto` kept
    modelfile: Path | None = None
    seconds: float = 0.0
    table: list[dict] = field(default_factory=list)


def file_name(name: str, qtype: str) -> str:
    return f"{name}.{qtype.upper()}.gguf"


def calibration_texts(run_dir: Path, tokenizer, n: int = CALIBRATION_ROWS) -> list[str]:
    """The training texts the run left for this (runs.CALIBRATION); for older runs, the run's conversations
    rendered with the chat template (what the model will see)."""
    from edgetune.data import load_conversations
    from edgetune.data.template import render
    from edgetune.runs import load_run_config

    texts = runs.read_texts(run_dir, runs.CALIBRATION)
    if texts is not None:
        return texts[:n]
    cfg = load_run_config(run_dir)
    try:
        convs, _, _ = load_conversations(cfg.data)
    except Exception:  # the data may have moved since training; calibration is an optimisation, not a must
        return []
    step = max(1, len(convs) // n)
    return [render(tokenizer, c) for c in convs[::step][:n]]


def remove_stale_temps(folder: Path) -> None:
    """A killed export (SIGKILL) can leave `.NAME.*.tmp` files; they are never at a final path, so drop them."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def export_gguf(run_dir: Path, qtypes: list[str], sink=null_sink, max_kld: float | None = None,
                imatrix: bool | None = None, keep_f16: bool | None = None, verify: bool = True,
                eval_data: str | None = None, match: str = "exact") -> ExportResult:
    """Export RUN_DIR's merged model to each GGUF type in `qtypes` (or `auto`), verified, into RUN_DIR/gguf/.

    With `eval_data` (rows with prompt/answer), every file also gets a task score (edgetune.evaluate, `match` rule),
    so `auto` can be judged on the task as well as on KL divergence.
    """
    from edgetune.merge import merge
    from edgetune.runs import load_run_config, update_report
    from edgetune.tokenizer import load_tokenizer

    from .gguf_convert import convert, read_config
    from .gguf_slice import use_slice, verify_f16_sliced
    from .modelfile import write_modelfile
    from .quantize import compute_imatrix, quantize
    from .report_md import write_report_md
    from .verify import (DEFAULT_CHAT_PROMPTS, MAX_MEAN_KLD, MAX_POSITION_KLD, HFReference, check_gate,
                         heldout_texts, verify_gguf)

    t0 = time.time()
    run_dir = runs.require_run_dir(run_dir)
    cfg = load_run_config(run_dir)
    wanted = normalise_types(qtypes or cfg.export.gguf)
    auto = "auto" in wanted
    max_kld = cfg.export.max_kld if max_kld is None else max_kld
    use_imatrix = cfg.export.imatrix if imatrix is None else imatrix
    keep_f16 = cfg.export.keep_f16 if keep_f16 is None else keep_f16
    merged = run_dir / runs.MERGED
    out_dir = run_dir / runs.GGUF
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    quants = [q for q in (AUTO_CANDIDATES if auto else wanted) if q not in ("f16", "bf16")]
    disk = disk_plan_for(run_dir, cfg, [*(["bf16"] if "bf16" in wanted else []), *quants],
                         keep_f16=keep_f16 or "f16" in wanted, auto=auto, imatrix=use_imatrix, verify=verify)
    sink(Note(disk.describe()))
    disk.check()  # before the merge and the first file: never fail for space half way through
    if not (merged / "config.json").is_file():
        sink(Note("no merged model yet: merging first"))
        merge(run_dir, sink)
    name = runs.slug(cfg.name or run_dir.name)
    sink(StageStarted("export", f"{', '.join(wanted)} -> {out_dir}"))
    sink(Note(f"plan: {merged.name}/ -> F16 GGUF (verified: KL divergence to the merged model <= "
              f"{MAX_MEAN_KLD['f16']:.0e} mean and <= {MAX_POSITION_KLD['f16']:.0e} at any position required)"
              + (f" -> {', '.join(q.upper() for q in quants)}" if quants else "")
              + (f"; keep the smallest with mean KLD < {max_kld}" if auto else "")
              + ("; importance matrix from this run's data for <= 5-bit types" if use_imatrix and any(q in IMATRIX_TYPES for q in quants) else "")))

    f16 = convert(merged, out_dir / file_name(name, "f16"), "f16", sink)
    files = [f16]
    if "bf16" in wanted:
        files.append(convert(merged, out_dir / file_name(name, "bf16"), "bf16", sink))
    tokenizer = load_tokenizer(merged)
    imatrix_path = None
    if use_imatrix and any(q in IMATRIX_TYPES for q in quants):
        texts = calibration_texts(run_dir, tokenizer)
        if texts:
            sink(StageStarted("imatrix", f"{len(texts)} training conversations"))
            t1 = time.time()
            # GGUF inside, but not a model: no .gguf suffix, so nothing that globs *.gguf mistakes it for one
            imatrix_path = compute_imatrix(merged, texts, out_dir / f"{name}.imatrix", sink=sink)
            sink(StageFinished("imatrix", time.time() - t1))
    for q in quants:
        files.append(quantize(f16, out_dir / file_name(name, q), q, sink,
                              imatrix=imatrix_path if q in IMATRIX_TYPES else None))

    results: list[dict] = []
    if verify:
        sink(StageStarted("verify", f"{len(files)} file(s) against {merged.name}/"))
        t1 = time.time()
        ref = HFReference(merged, cache_dir=out_dir, sink=sink)
        texts = heldout_texts(run_dir, ref.tokenizer, sink=sink)
        sliced = use_slice(cfg.export.f16_check, f16.stat().st_size, read_config(merged))
        for path, qtype in zip(files, ["f16", *(["bf16"] if "bf16" in wanted else []), *quants]):
            if path == f16 and sliced:  # bounded memory: the F16 is never mapped whole (export/gguf_slice.py)
                result = verify_f16_sliced(f16, merged, texts, out_dir, sink)
            else:
                result = verify_gguf(path, ref, texts, DEFAULT_CHAT_PROMPTS, qtype, sink)
            result["imatrix"] = bool(imatrix_path) and qtype in IMATRIX_TYPES
            results.append(result)
            sink(Note(summary_line(result)))
        sink(StageFinished("verify", time.time() - t1))
    if eval_data and results:
        add_task_scores(results, eval_data, match, merged, sink)
    chosen = None
    if auto and results:
        chosen = choose_auto(results, max_kld)
        if chosen is None:  # never leave the user with no file: keep the most faithful candidate, and say so
            fallback = min((r for r in results if r["type"] in AUTO_CANDIDATES), key=lambda r: r["mean_kld"])["type"]
            sink(Note(f"auto: no candidate stayed under mean KLD {max_kld} and stopped at EOS; kept "
                      f"{fallback.upper()} (lowest KLD). Raise --max-kld, or train more if replies do not stop",
                      "warning"))
            chosen = fallback
        else:
            sink(Note(f"auto: kept {chosen.upper()} (smallest with mean KLD < {max_kld})"))
        for r in results:
            if r["type"] in AUTO_CANDIDATES and r["type"] != chosen:
                Path(r["path"]).unlink(missing_ok=True)
                r["kept"] = False
    f16_result = results[0] if results else None
    if "f16" not in wanted and not keep_f16 and (f16_result is None or not f16_result.get("fidelity_failures")):
        f16.unlink(missing_ok=True)  # an intermediate (kept when unfaithful, to debug); `--gguf f16` keeps it
        if f16_result:
            f16_result["kept"] = False
    kept = [Path(r["path"]) for r in results if r.get("kept", True)] if results else [f for f in files if f.exists()]
    primary = next((p for p in kept if p.exists() and ".F16." not in p.name), kept[0] if kept else None)
    modelfile = write_modelfile(out_dir, primary.name, merged) if primary else None
    update_report(run_dir, "export", {"files": results, "auto": {"max_kld": max_kld, "chosen": chosen} if auto else None,
                                      "imatrix": str(imatrix_path) if imatrix_path else None,
                                      "modelfile": str(modelfile) if modelfile else None})
    write_report_md(run_dir)
    if f16_result is not None:
        check_gate(f16_result)  # after the report is written, so the numbers are there to read
    for r in results:
        if r.get("kept", True) and r["type"] != "f16":
            check_gate(r)
    sink(StageFinished("export", time.time() - t0, f"{len(kept)} file(s)"))
    return ExportResult(kept, results, chosen, modelfile, time.time() - t0)


def disk_plan_for(run_dir: Path, cfg, quants: list[str], keep_f16: bool, auto: bool, imatrix: bool, verify: bool):
    """The export's disk plan: sizes from the merged checkpoint's headers (or the base's, when merging first)."""
    import json

    from edgetune import models
    from edgetune.models import local_checkpoint

    from .disk_plan import checkpoint_params, plan_gguf_export
    from .gguf_slice import slice_file_bytes
    from .verify import GENERIC_TEXTS, MAX_TEXT_TOKENS

    merged = run_dir / runs.MERGED
    source = merged if (merged / "config.json").is_file() else local_checkpoint(
        models.resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code))
    n_params = checkpoint_params(source)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    vocab = int((config.get("text_config") or config).get("vocab_size") or 0)
    merge_bytes = 0 if source == merged else n_params * (4 if cfg.export.merge_dtype == "fp32" else 2)
    return plan_gguf_export(run_dir, n_params, quants, merge_bytes=merge_bytes, keep_f16=keep_f16,
                            keep_quants=not auto, imatrix=imatrix and any(q in IMATRIX_TYPES for q in quants),
                            verify=verify, reference_positions=(6 + len(GENERIC_TEXTS)) * MAX_TEXT_TOKENS, vocab=vocab,
                            slice_bytes=slice_file_bytes(config, n_params, cfg.export.f16_check))


def add_task_scores(results: list[dict], eval_data: str, match: str, merged: Path, sink) -> None:
    """Greedy replies of each file on the eval rows, scored like `edgetune eval` (task_score per result)."""
    from functools import partial

    from edgetune.evaluate import GGUFBackend, evaluate_targets, load_eval_rows

    rows = load_eval_rows(eval_data)
    targets = [(r["file"], partial(GGUFBackend, Path(r["path"]), merged)) for r in results]
    for r, scored in zip(results, evaluate_targets(targets, rows, max_tokens=64, sink=sink, match=match)):
        r["task_score"] = scored["task_score"]


def normalise_types(qtypes: list[str]) -> list[str]:
    return parse_choices(qtypes, [*GGUF_TYPES, "auto"], "GGUF type", "--gguf q4_k_m (repeatable) or --gguf auto")


def choose_auto(results: list[dict], max_kld: float) -> str | None:
    """Smallest file among the auto candidates whose mean KLD is under the budget and that stops at EOS."""
    ok = [r for r in results if r["type"] in AUTO_CANDIDATES and r.get("mean_kld") is not None
          and r["mean_kld"] < max_kld and r.get("stops_at_eos", True)]
    return min(ok, key=lambda r: r["size_bytes"])["type"] if ok else None


def summary_line(r: dict) -> str:
    return (f"{r['type'].upper():7} {r['size_bytes'] / 1e6:7.1f} MB  top-1 {r['top1']:.3f}  KLD {r['mean_kld']:.4f}  "
            f"token ids {'identical' if r['token_ids_identical'] else 'DIFFER'}  "
            f"stops at EOS {'yes' if r['stops_at_eos'] else 'NO'}  {'ok' if r['passed'] else 'FAILED'}")
