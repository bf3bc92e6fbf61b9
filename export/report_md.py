"""RUN_DIR/report.json (one section per stage) -> RUN_DIR/report.md, for people to read."""
from __future__ import annotations

import json
from pathlib import Path

from edgetune import runs

REPORT_MD = "report.md"


def write_report_md(run_dir: Path) -> Path:
    """Render report.json's merge, export, eval, perplexity and forgetting sections to report.md (atomically)."""
    run_dir = Path(run_dir)
    data = json.loads((run_dir / runs.REPORT).read_text(encoding="utf-8"))
    parts = [f"# edgetune report: {run_dir.name}", ""]
    if "merge" in data:
        parts += _merge_section(data["merge"])
    if "export" in data:
        parts += _export_section(data["export"])
    if "eval" in data:
        parts += _eval_section(data["eval"])
    if "perplexity" in data:
        parts += _perplexity_section(data["perplexity"])
    if "forgetting" in data:
        parts += _forgetting_section(data["forgetting"])
    known = {"merge", "export", "eval", "perplexity", "forgetting"}
    for key in (k for k in data if k not in known):  # sections added by later stages still show up
        parts += [f"## {key}", "", "```json", json.dumps(data[key], indent=2, default=str), "```", ""]
    path = run_dir / REPORT_MD
    runs.atomic_write_text(path, "\n".join(parts).rstrip() + "\n")
    return path


def _merge_section(merge: dict) -> list[str]:
    lines = ["## Merge", ""]
    for key, label in (("merged_dir", "merged model"), ("dtype", "dtype"),
                       ("max_logit_diff", "largest logit difference vs base+adapter"),
                       ("mean_logit_diff", "mean logit difference"), ("seconds", "seconds"),
                       ("check", "how the difference was computed")):
        if key in merge:
            lines.append(f"- {label}: {_fmt(merge[key])}")
    return lines + [""]


def _export_section(export) -> list[str]:
    results = export if isinstance(export, list) else export.get("files", [export])
    lines = ["## Export (GGUF verification)", "",
             "| file | type | size MB | top-1 | KLD | token ids | stops at EOS | passed |",
             "|---|---|---:|---:|---:|---|---|---|"]
    for r in results:
        lines.append("| " + " | ".join([
            f"`{r.get('file', '?')}`", str(r.get("type", "?")).upper(),
            f"{r['size_bytes'] / 1e6:.1f}" if "size_bytes" in r else "-",
            _pct(r.get("top1")), _fmt(r.get("mean_kld")),
            _yes_no(r.get("token_ids_identical"), "identical", "DIFFER"),
            _yes_no(r.get("stops_at_eos")), _yes_no(r.get("passed"), "yes", "**no**")])
            + (" (not kept)" if r.get("kept") is False else "") + " |")
    lines += ["", "top-1: share of positions where llama.cpp's most likely next token is the HF model's; "
              "KLD: mean KL(HF || GGUF) per position (0 = identical). Full-precision files must stay within "
              "1e-4 mean and 1e-2 at any position (top-1 may dip on near-ties); quantized files trade accuracy for "
              "size. How: the merged model's next-token log-probs on the run's held-out texts (heldout.jsonl) and "
              "generic texts come from transformers in fp32, run layer by layer from the safetensors files; each "
              "GGUF's logits come from llama.cpp (f32 KV cache) on the same token ids; the chat check is greedy "
              "llama.cpp chat with the file's own template.", ""]
    for r in results:
        if (check := r.get("check")) and check.get("method") == "layer slice":
            lines += [f"`{r.get('file', '?')}` was checked in bounded memory: its first {check.get('layers')} of "
                      f"{check.get('of_layers')} layers ran in llama.cpp against transformers running the same "
                      f"layers (the numbers above), and all {check.get('tensors_compared')} tensors were compared "
                      "byte for byte with the converter's output for merged/; its chat check is left to the "
                      "quantized files.", ""]
    for r in results:
        problems = r.get("failures") or []
        if problems:
            lines.append(f"**{r.get('file', '?')}**:")
            lines += [f"- {p}" for p in problems]
            lines.append("")
        for m in (r.get("token_mismatches") or [])[:3]:
            lines.append(f"- token mismatch on {m.get('text', '')[:60]!r}: HF {m.get('hf', [])[:12]} vs "
                         f"GGUF {m.get('gguf', [])[:12]}")
    if isinstance(export, dict):
        if (auto := export.get("auto")) and isinstance(auto, dict):
            lines.append(f"- auto: kept {str(auto.get('chosen') or 'nothing').upper()} "
                         f"(mean KLD budget {auto.get('max_kld')})")
        for key in ("modelfile", "imatrix"):
            if export.get(key):
                lines.append(f"- {key}: `{export[key]}`")
    replies = [(r.get("file", "?"), reply) for r in results for reply in (r.get("replies") or [])[:1]]
    if replies:
        lines += ["", "First chat reply of each file (greedy):", ""]
        lines += [f"- `{name}`: {reply.strip()[:160]!r}" for name, reply in replies]
    return lines + [""]


def _eval_section(ev) -> list[str]:
    lines = ["## Eval", ""]
    if isinstance(ev, dict):
        for key, value in ev.items():
            lines.append(f"- {key}: {_fmt(value) if not isinstance(value, (dict, list)) else json.dumps(value)}")
    else:
        lines += ["```json", json.dumps(ev, indent=2, default=str), "```"]
    return lines + [""]


def _perplexity_section(ppl: dict) -> list[str]:
    lines = ["## Held-out perplexity (domain text)", "", f"`{ppl.get('data')}`, blocks of {ppl.get('block_tokens')} tokens",
             "", "| model | perplexity | tokens |", "|---|---:|---:|"]
    lines += [f"| {r['label']} | {r['perplexity']:.3f} | {r['tokens']} |" for r in ppl.get("targets", [])]
    return lines + ["", f"How: {ppl.get('how', '')}.", ""]


def _forgetting_section(fg: dict) -> list[str]:
    kinds = sorted({k for r in fg.get("targets", []) for k in r.get("by_kind", {})})
    lines = ["## Forgetting check (general probe)", "",
             "| model | score of 100 | " + " | ".join(kinds) + " |", "|---|---:|" + "---:|" * len(kinds)]
    lines += [f"| {r['label']} | {r['score']:.1f} | " + " | ".join(f"{r['by_kind'].get(k, 0):g}" for k in kinds) + " |"
              for r in fg.get("targets", [])]
    lines.append("")
    if "drop" in fg:
        if fg.get("warning"):
            lines.append(f"**Warning: the tuned model scores {fg['drop']:.1f} points below the base** (allowed: "
                         f"{fg['max_drop']:g}, `eval.max_probe_drop`); items the base passed and it fails: "
                         f"{', '.join(fg.get('lost_items', [])) or '-'}. Fewer steps, a lower learning rate or general "
                         "chat data mixed into the training set keep more of it.")
        else:
            lines.append(f"Tuned vs base: {-fg['drop']:+.1f} points (allowed drop {fg['max_drop']:g}).")
    return lines + ["", f"How: {fg.get('how', '')}.", ""]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value else f"{value:.4f}".rstrip("0").rstrip(".")
    return "-" if value is None else str(value)


def _yes_no(value, yes: str = "yes", no: str = "no") -> str:
    return "-" if value is None else (yes if value else no)
