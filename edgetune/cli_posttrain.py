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


def merge_adapters_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories with adapter/, trained on one base."),
    out: Path = typer.Option(..., "--out", "-o", help="New run directory for the merged adapter (must not exist)."),
    method: str = typer.Option("linear", "--method", help="linear | ties | dare_ties | dare_linear | magnitude_prune "
                               "| cat | svd (| ties_svd | dare_ties_svd | dare_linear_svd | magnitude_prune_svd). "
                               "linear/ties/dare need equal ranks and targets; cat and svd take any."),
    weights: Optional[str] = typer.Option(None, "--weights", help="One weight per run, comma-separated (default: "
                                          "1/n each for linear, 1 each otherwise)."),
    density: Optional[float] = typer.Option(None, "--density", help="ties/dare/magnitude_prune: fraction of each "
                                            "adapter's entries kept (default 0.5)."),
    svd_rank: Optional[int] = typer.Option(None, "--svd-rank", help="svd methods: rank of the merged adapter "
                                           "(default: the largest source rank)."),
    seed: int = typer.Option(0, "--seed", help="Seed for DARE's random drop."),
):
    """Merge the LoRA adapters of several runs (PEFT weighted merging) into a new run directory.

    The result is a normal run: edgetune merge / export / eval / chat take it. Refused up front when the runs have
    different base models, tokenizers or chat templates, or (linear, ties, dare) different ranks or target modules.
    """
    from edgetune.merge_adapters import merge_adapters, parse_weights

    parsed = parse_weights(weights, len(run_dirs), method)
    sink = _sink()
    try:
        result = merge_adapters(run_dirs, out, method, parsed, density, svd_rank, seed, sink)
    finally:
        sink.close()
    extra = f", density {result.density}" if result.density is not None else ""
    typer.echo(f"merged {len(result.sources)} adapters ({result.method}, weights {result.weights}{extra}) into a "
               f"rank-{result.rank} adapter: {result.run_dir}")
    typer.echo(f"next: edgetune eval {out} --data EVAL.jsonl (each task's rows), then edgetune merge {out}")
