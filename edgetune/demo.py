"""`edgetune demo`: the whole product on the embedded default, offline, on CPU, in a few minutes.

SFT SmolLM2-135M-Instruct on the shipped pirate data (every reply opens with "Arr!"), merge, export Q8_0 and
Q4_K_M with the verification gate, score base vs tuned on held-out prompts, and show before/after answers.
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from edgetune.events import Note, StageFinished, StageStarted, null_sink

DEMO_PROMPTS = ["What is the capital of Italy?", "How do I make my code run faster?", "Tell me a fun fact about octopuses."]
EVAL_ROWS = 8  # held-out rows scored per model: enough to see the style change, short enough for the time budget


def sample_path(name: str) -> Path:
    return Path(str(resources.files("edgetune").joinpath("sample_data", name)))


def demo_config(run_dir: Path, max_steps: int):
    from edgetune import config as C
    from edgetune.hardware import detect_profile

    overrides = {"name": run_dir.name, "run_dir": str(run_dir), "model": {"ref": "default"},
                 "data": {"path": str(sample_path("pirate_chat.jsonl"))},
                 # lr 2e-4 over 40 steps of batch 4 (~0.7 epoch): enough for the style, not enough to forget facts
                 "train": {"max_steps": max_steps, "save_steps": 20, "learning_rate": 2e-4},
                 "export": {"gguf": ["q8_0", "q4_k_m"]}}
    return C.resolve(None, overrides, detect_profile=detect_profile)


def answers(backend, prompts: list[str], max_tokens: int = 48) -> list[tuple[str, str]]:
    """Greedy replies with their finish reason."""
    out = []
    for p in prompts:
        text = "".join(backend.stream([{"role": "user", "content": p}], max_tokens, 0.0)).strip()
        out.append((text, getattr(backend, "finish_reason", "stop")))
    return out


def run_demo(run_dir: Path | None = None, max_steps: int = 40, sink=null_sink) -> dict:
    from edgetune import runs
    from edgetune.chat import HFBackend, LlamaCppBackend
    from edgetune.evaluate import PIRATE_MATCH, evaluate_targets, load_eval_rows, targets_for, write_eval_report
    from edgetune.events import Fanout, MetricsFile
    from edgetune.export.gguf_export import export_gguf
    from edgetune.merge import merge
    from edgetune.models import resolve
    from edgetune.train import train

    t0 = time.time()
    run_dir = Path(run_dir or runs.default_run_dir(f"demo-{time.strftime('%Y%m%d-%H%M%S')}"))
    cfg = demo_config(run_dir, max_steps)
    sink(Note(f"demo run directory: {run_dir}"))

    sink(StageStarted("before", "base model answers"))
    base = HFBackend.from_dir(Path(resolve("default", sink=sink).path))
    before = answers(base, DEMO_PROMPTS)
    del base
    sink(StageFinished("before", time.time() - t0))

    train(cfg, Fanout(sink, MetricsFile(run_dir / runs.METRICS, "sft")))
    merge(run_dir, sink)
    exported = export_gguf(run_dir, cfg.export.gguf, sink)

    q4 = next(p for p in exported.files if "Q4_K_M" in p.name)
    tuned = LlamaCppBackend(q4)
    after = answers(tuned, DEMO_PROMPTS)
    tuned.llm.close()

    rows = load_eval_rows(sample_path("pirate_eval.jsonl"))[:EVAL_ROWS]
    # Base (transformers) vs the file a user would ship (Q4_K_M, llama.cpp); `edgetune eval RUN` scores them all.
    targets = [t for t in targets_for(str(run_dir), sink) if t[0].startswith("base") or "Q4_K_M" in t[0]]
    results = evaluate_targets(targets, rows, max_tokens=24, sink=sink, match=PIRATE_MATCH)
    write_eval_report(run_dir, results, str(sample_path("pirate_eval.jsonl")))
    from edgetune.export.report_md import write_report_md

    write_report_md(run_dir)
    return {"run_dir": run_dir, "before": before, "after": after, "export": exported, "eval": results,
            "seconds": time.time() - t0, "q4": q4}
