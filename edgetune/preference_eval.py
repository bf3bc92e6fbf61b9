"""Held-out preference pairs: does the model prefer `chosen` to `rejected`?

For each pair, the summed log-probability of each reply given the prompt (teacher forcing, the reply tokens and its
end-of-turn marker, exactly the tokens DPO scores). Reported per model: preference accuracy (share of pairs with
logp(chosen) > logp(rejected)) and the mean margin logp(chosen) - logp(rejected). `edgetune eval RUN --data
pairs.jsonl` uses this when the rows are pairs; base and tuned are printed side by side.
"""
from __future__ import annotations

import time

import numpy as np

from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink


def reply_logprob(logits_of, tokenizer, prompt: list[dict], reply: list[dict]) -> float:
    from edgetune.data.template import encode

    ids, mask = encode(tokenizer, prompt + reply)
    logits = logits_of(ids)
    x = logits - logits.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    # position t predicts token t+1; sum over the reply tokens (mask marks them)
    return float(sum(logp[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t]))


def score_pairs(targets, rows: list[dict], sink=null_sink) -> list[dict]:
    """targets: (label, backend factory) pairs with HF backends (see evaluate.targets_for)."""
    from edgetune.evaluate import hf_logits

    results, t_stage = [], time.time()
    sink(StageStarted("eval", f"{len(targets)} model(s) x {len(rows)} preference pairs"))
    for label, make in targets:
        t0 = time.time()
        backend = make() if callable(make) else make
        if not hasattr(backend, "model"):
            sink(Note(f"{label}: skipped (preference scoring needs a transformers model)", "warning"))
            continue
        margins = []
        for i, r in enumerate(rows, 1):
            def logits_of(ids):
                return hf_logits(backend.model, ids)

            c = reply_logprob(logits_of, backend.tokenizer, r["prompt"], r["chosen"])
            j = reply_logprob(logits_of, backend.tokenizer, r["prompt"], r["rejected"])
            margins.append(c - j)
            sink(Progress("eval", i, len(rows), f"{label}: pair {i}/{len(rows)}"))
        acc = float(np.mean([m > 0 for m in margins]))
        result = {"label": label, "backend": "hf", "preference_accuracy": acc, "mean_margin": float(np.mean(margins)),
                  "n": len(rows), "seconds": round(time.time() - t0, 2)}
        results.append(result)
        sink(Note(f"{label}: preference accuracy {acc:.1%}, mean log-prob margin {result['mean_margin']:+.3f} "
                  f"over {len(rows)} held-out pairs"))
    sink(StageFinished("eval", time.time() - t_stage))
    return results
