"""Regenerate the DPO demo pairs: `python edgetune/sample_data/make_pirate_pairs.py` (deterministic, offline).

Each pair prefers Pip's pirate reply (from make_pirate.py) over what the base model says today: `rejected` is the
embedded SmolLM2-135M-Instruct's own greedy reply, generated through llama.cpp from the shipped GGUF. This is the
usual shape of preference data (the wanted answer against the model's current one), and the held-out pairs use the
held-out questions of pirate_eval.jsonl, so `edgetune eval RUN --data pirate_pairs_eval.jsonl` measures whether the
preference generalises.
Writes pirate_pairs.jsonl (single-turn training questions) and pirate_pairs_eval.jsonl.
"""
from __future__ import annotations

from pathlib import Path

from make_pirate import build, write_jsonl

HERE = Path(__file__).parent
MAX_TOKENS = 64


def base_replies(prompts: list[str]) -> list[str]:
    from edgetune.chat import LlamaCppBackend
    from edgetune.models import default_gguf_path

    llm = LlamaCppBackend(default_gguf_path())
    out = []
    for i, p in enumerate(prompts, 1):
        out.append("".join(llm.stream([{"role": "user", "content": p}], MAX_TOKENS, 0.0)).strip())
        print(f"\r{i}/{len(prompts)}", end="", flush=True)
    print()
    return out


def pairs(prompts: list[str], chosen: list[str]) -> list[dict]:
    rejected = base_replies(prompts)
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)
            if r and r != c]  # an empty or identical base reply is not a preference


if __name__ == "__main__":
    train, evals = build()
    singles = [row["messages"] for row in train if len(row["messages"]) == 2]
    train_pairs = pairs([m[0]["content"] for m in singles], [m[1]["content"] for m in singles])
    eval_pairs = pairs([r["prompt"] for r in evals], [r["answer"] for r in evals])
    write_jsonl(HERE / "pirate_pairs.jsonl", train_pairs)
    write_jsonl(HERE / "pirate_pairs_eval.jsonl", eval_pairs)
    print(f"wrote {len(train_pairs)} training pairs and {len(eval_pairs)} held-out pairs to {HERE}")
