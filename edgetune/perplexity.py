"""Held-out perplexity on domain text, for every model a run produced (what continued pretraining should lower).

`edgetune eval RUN --data heldout.txt` (raw text: a .txt/.md file, a folder of them, or .jsonl with `text`), or
`edgetune eval RUN` on a cpt run trained with `data.eval_fraction` (its RUN/heldout_text.jsonl). The text is packed
into blocks exactly as training packs it (edgetune.data.text.pack), every token but each block's first is predicted
(teacher forcing), and perplexity = exp(mean NLL per token). Each target tokenizes with its own tokenizer (a run's
targets share one), so the numbers compare directly within a run.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from edgetune import runs
from edgetune.errors import DataError, RunDirError
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

MAX_BLOCKS = 64  # blocks scored per target: a stable mean without minutes per model on a CPU
DEFAULT_BLOCK = 512


def heldout_text_of(run_dir: Path) -> Path | None:
    """A cpt run's held-out text (in the run, or in the cpt stage of a staged run), else None."""
    found = [Path(run_dir) / runs.HELDOUT_TEXT, *sorted(Path(run_dir).glob(f"stages/*/{runs.HELDOUT_TEXT}"))]
    return next((f for f in found if f.is_file()), None)


def block_length(run_or_model: str, asked: int | None) -> int:
    if asked:
        return asked
    if (Path(run_or_model) / runs.CONFIG).is_file():
        return min(runs.load_run_config(Path(run_or_model)).train.max_length, 1024)
    return DEFAULT_BLOCK


def run_perplexity(run_or_model: str, data_path: str | None = None, block: int | None = None,
                   max_blocks: int = MAX_BLOCKS, sink=null_sink) -> dict:
    """Score every target of `run_or_model` (edgetune.evaluate.targets_for) on the text; recorded in report.json
    under "perplexity" for a run dir. Returns {"data", "block_tokens", "targets": [{label, perplexity, ...}]}."""
    from edgetune.data.text import MIN_BLOCK, read_documents
    from edgetune.evaluate import logits_fn, release, targets_for, tokenizer_of

    is_run = (Path(run_or_model) / runs.CONFIG).is_file()
    if data_path is None:
        found = heldout_text_of(Path(run_or_model)) if is_run else None
        if found is None:
            raise RunDirError(f"{run_or_model}: no held-out domain text to score",
                              hint="pass --data with held-out raw text (.txt/.md, a folder, or .jsonl with `text`), "
                                   "or train cpt with data.eval_fraction > 0")
        data_path = str(found)
    docs, problems, _ = read_documents(data_path)
    for p in problems[:5]:
        sink(Note(f"skipped {p}", "warning"))
    block = block_length(run_or_model, block)
    targets = targets_for(run_or_model, sink)
    sink(StageStarted("perplexity", f"{len(targets)} model(s) on {data_path}"))
    t_stage, results = time.time(), []
    for t_index, (label, item) in enumerate(targets):
        t0 = time.time()
        built = not hasattr(item, "stream")
        backend = item() if built else item
        blocks = _blocks(tokenizer_of(backend), docs, block, max_blocks)
        if not blocks:
            release(backend, built)
            raise DataError(f"{data_path}: too little text to score (under {MIN_BLOCK} tokens)",
                            hint="pass more held-out text with --data")
        fn, close = logits_fn(backend, block)
        nll, n = 0.0, 0
        try:
            for i, ids in enumerate(blocks, 1):
                s, k = _block_nll(fn(ids), ids)
                nll, n = nll + s, n + k
                sink(Progress("perplexity", t_index * len(blocks) + i, len(targets) * len(blocks), f"{label}: block {i}/{len(blocks)}"))
        finally:
            close()
        ppl = math.exp(nll / n) if n else float("nan")
        results.append({"label": label, "backend": backend.name, "perplexity": ppl, "nll": nll / n if n else None,
                        "tokens": n, "blocks": len(blocks), "seconds": round(time.time() - t0, 2)})
        sink(Note(f"{label}: held-out perplexity {ppl:.3f} over {n} tokens ({len(blocks)} blocks)"))
        del fn
        release(backend, built)
        del backend
    sink(StageFinished("perplexity", time.time() - t_stage))
    out = {"data": str(data_path), "block_tokens": block, "targets": results,
           "how": "exp(mean next-token NLL) over the text packed into blocks as training packs it"}
    if is_run:
        runs.update_report(Path(run_or_model), "perplexity", out)
    return out


def _blocks(tokenizer, docs, block: int, max_blocks: int) -> list[list[int]]:
    from edgetune.data.text import pack

    blocks, _, _ = pack(tokenizer, docs, block)
    if len(blocks) > max_blocks:  # spread over the whole text, not just its start
        step = len(blocks) / max_blocks
        blocks = [blocks[int(i * step)] for i in range(max_blocks)]
    return blocks


def _block_nll(logits, ids: list[int]) -> tuple[float, int]:
    from edgetune.evaluate import answer_nll

    return answer_nll(logits, ids, [1] * len(ids))
