"""CLI commands around training rather than in it: `distill` (a teacher writes SFT data) and `merge-adapters` (several
runs' LoRA adapters combined into one run). cli.py registers them; like every command they are thin over the core."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _sink():
    from edgetune.console import RichSink

    return RichSink()


def distill_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="The bigger local model that answers: a .gguf file "
                                "(llama.cpp), an HF model folder, a hub id in the local cache, a run directory "
                                "(its merged model or base + adapter), or `default`."),
    prompts: str = typer.Option(..., "--prompts", "-p", help="Prompts, one row each (.jsonl/.json/.csv/.parquet): "
                                "{\"prompt\": \"...\"} or {\"messages\": [...]} ending with a user turn (an SFT file "
                                "works too: its last assistant turn is dropped)."),
    out: Path = typer.Option(..., "--out", "-o", help="SFT file to append the answers to (messages format; rows "
                             "already there are kept and their prompts skipped)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Longest answer in tokens; answers cut off here are "
                                   "skipped (see --keep-truncated) and retried by a rerun with a larger value."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling: keep the most likely tokens up to this mass."),
    repeat_penalty: float = typer.Option(1.0, "--repeat-penalty", help="Repetition penalty (1.0 = off; 1.1 if a "
                                         "small or heavily quantized teacher loops)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; each answer's seed also depends on its prompt, so a rerun "
                             "reproduces it."),
    samples: int = typer.Option(1, "--samples", help="Answers per prompt (each its own row; use temperature > 0)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt for the teacher only (rows keep the "
                                         "prompt's own messages, so the student learns the behaviour without it)."),
    keep_system: bool = typer.Option(False, "--keep-system", help="Write --system into the rows too."),
    keep_truncated: bool = typer.Option(False, "--keep-truncated", help="Keep answers cut off at --max-tokens."),
    backend: str = typer.Option("auto", "--backend", help="auto | llamacpp | hf"),
    n_ctx: int = typer.Option(4096, "--n-ctx", help="llama.cpp context in tokens (capped at the model's own)."),
    limit: int = typer.Option(0, "--limit", help="Use only the first N prompts (0 = all)."),
):
    """Write a bigger local model's answers to your prompts as SFT data, then train a small model on it.

    Resumable: each row is on disk as soon as it is generated; Ctrl-C keeps them and rerunning the same command
    continues. Then: edgetune train --data OUT.
    """
    from edgetune.distill import Sampling, distill

    if samples < 1 or max_tokens < 1:
        from edgetune.errors import ConfigError

        raise ConfigError([f"--samples {samples} and --max-tokens {max_tokens} must both be at least 1"])
    sampling = Sampling(max_tokens, temperature, top_p, repeat_penalty, seed, samples)
    sink = _sink()
    try:
        result = distill(teacher, prompts, out, sampling, system or "", keep_system, keep_truncated, backend, n_ctx,
                         limit, sink)
    finally:
        sink.close()
    total = result.written + result.already_done
    typer.echo(f"wrote {result.written} rows ({result.tokens} tokens) in {result.seconds:.0f} s; {total} answers "
               f"in {out}" + (f", skipped: {result.skipped}" if result.skipped else ""))
    typer.echo(f"next: edgetune validate --data {out}   then: edgetune train --data {out}")
