"""Continued pretraining (method `cpt`): the train stage's data step for raw text.

The corpus (edgetune.data.text) is packed into max_length blocks whose labels are every token, and trained through
the same TRL SFTTrainer as SFT (edgetune.methods.sft): the loss is the plain causal-LM loss on the domain text.
With `data.eval_fraction`, whole blocks are held out; their text is kept in RUN/heldout_text.jsonl so that
`edgetune eval RUN` reports held-out perplexity, base vs tuned, without being told where the text was.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgetune import runs
from edgetune.config import RunConfig
from edgetune.distributed import is_main
from edgetune.events import Note, Progress

HELDOUT_TEXT_BLOCKS = 64  # held-out blocks kept for perplexity (enough for a stable mean, quick on a CPU)


def prepare_text(cfg: RunConfig, tokenizer, run_dir: Path, sink):
    """(train Dataset, eval Dataset or None) of packed blocks; writes data_report.json and the held-out text (the
    train stage writes the calibration/held-out samples every method leaves)."""
    from datasets import Dataset

    from edgetune.data.text import load_corpus

    def progress(i: int, n: int) -> None:
        sink(Progress("tokenize", i, n, f"{i}/{n} documents"))

    blocks, report = load_corpus(tokenizer, cfg.data.path, cfg.train.max_length, cfg.data.max_examples, progress)
    if is_main():  # on N processes every rank prepares the same blocks; rank 0 writes them down
        runs.atomic_write_text(run_dir / runs.DATA_REPORT, json.dumps(report.to_dict(), indent=2, default=str))
    for p in report.problems[:5]:
        sink(Note(f"skipped {p}", "warning"))
    if len(report.problems) > 5:
        sink(Note(f"... and {len(report.problems) - 5} more skipped file(s): see {run_dir / runs.DATA_REPORT}", "warning"))
    report.check()
    sink(Note(f"data: {report.n_documents} documents from {report.n_files} file(s), {report.n_tokens:,} tokens, "
              f"packed into {report.n_blocks} blocks of up to {report.max_length} tokens (loss on every token)"
              + (f", {report.n_rejected} file(s) skipped" if report.problems else "")))
    ds, eval_ds = Dataset.from_dict({"input_ids": blocks, "labels": [list(b) for b in blocks]}), None
    if cfg.data.eval_fraction > 0 and len(ds) >= 4:
        split = ds.train_test_split(test_size=cfg.data.eval_fraction, seed=cfg.train.seed)
        ds, eval_ds = split["train"], split["test"]
    elif cfg.data.eval_fraction > 0:
        sink(Note(f"data.eval_fraction: only {len(ds)} block(s), too few to hold some out; training on all", "warning"))

    held = ([tokenizer.decode(ids, skip_special_tokens=True) for ids in eval_ds["input_ids"][:HELDOUT_TEXT_BLOCKS]]
            if eval_ds is not None else None)
    if held and is_main():
        runs.write_texts(run_dir, runs.HELDOUT_TEXT, held[:HELDOUT_TEXT_BLOCKS])
    elif is_main():
        (Path(run_dir) / runs.HELDOUT_TEXT).unlink(missing_ok=True)
    return ds, eval_ds
