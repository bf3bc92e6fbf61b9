"""Fidelity through the decode path: the run's held-out + generic texts fed one token at a time through the in-place
cache (onnx_runtime.SharedCache, what chat runs) against the merged model (compare_logits), beside the one-pass
logits that `edgetune export` verifies; and the greedy chat replies (repeat penalty 1.1, chat's default) on the
verification prompts, compared with the first folder's. For layouts that change one-token steps only by rounding
(export/onnx_fuse.py's decode_layout).

    python benchmarks/decode_fidelity.py RUN_DIR FOLDER[,FOLDER...]
e.g. RUN_DIR/onnx-recipes/q41_32_v8,RUN_DIR/onnx-recipes/q41_32_v8+decode (built by benchmarks/deploy.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> None:
    from edgetune.export.onnx_runtime import OnnxBackend
    from edgetune.export.verify import CHAT_MAX_TOKENS, DEFAULT_CHAT_PROMPTS, HFReference, compare_logits, heldout_texts

    run, folders = Path(argv[0]), [Path(f) for f in argv[1].split(",")]
    ref = HFReference(run / "merged")
    texts = heldout_texts(run, ref.tokenizer)
    ref.prepare(texts)
    first = None
    for folder in folders:
        backend = OnnxBackend(folder)
        model = backend.model

        def one_token_at_a_time(ids):
            cache = model.cache(len(ids))
            if cache is None:
                raise SystemExit(f"{folder}: its graph cannot share past and present (no in-place cache)")
            return np.concatenate([cache.step([t]) for t in ids])

        steps = compare_logits(one_token_at_a_time, ref, texts, 0.0)
        whole = compare_logits(model.logits, ref, texts, 0.0)
        replies = ["".join(backend.stream([{"role": "user", "content": p}], CHAT_MAX_TOKENS, 0.0))
                   for p in DEFAULT_CHAT_PROMPTS]
        first = first or replies
        same = sum(a == b for a, b in zip(replies, first))
        print(f"{folder}: one token at a time top-1 {steps.top1:.4f} KLD {steps.mean_kld:.4f} worst "
              f"{steps.max_kld:.3f} | one pass top-1 {whole.top1:.4f} KLD {whole.mean_kld:.4f} | chat replies equal "
              f"to {folders[0].name}'s: {same}/{len(replies)} ({steps.positions} positions)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
