"""Do GRPO and DPO move the embedded SmolLM2-135M where they should? Before/after numbers on held-out data.

    python benchmarks/methods_quality.py [--only grpo|dpo] [--work DIR] [--grpo-config FILE] [--dpo-steps 40]

GRPO: `edgetune train -c edgetune/sample_data/pirate_sft_grpo.toml` (a short SFT stage that leaves the "Arr!"
opening half-learnt, then GRPO on the training questions with `regex_format` "Arr! and four more words" and
`repetition_penalty`). Printed: the GRPO stage's mean reward over its first and last 5 steps (metrics.jsonl), and
`edgetune eval --match regex:<the same pattern>` task score and held-out loss on the 30 held-out questions of
pirate_eval.jsonl for the base, the SFT stage (before GRPO) and the final adapter (after), with example replies.
DPO: `edgetune train --method dpo --data pirate_pairs.jsonl` from the base; printed: preference accuracy and mean
log-prob margin on the held-out pairs of pirate_pairs_eval.jsonl (questions never trained on; `rejected` is the
base model's own reply), base vs tuned, as `edgetune eval RUN --data pirate_pairs_eval.jsonl` computes them, plus
the held-out task score above.
Everything runs through the same CLI / functions users call; runs land in --work (default: a temp dir).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "edgetune" / "sample_data"
EVAL_TOKENS = 24  # the score only needs the reply's opening; keeps eval quick on CPU


def sh(*args: str) -> float:
    """Run an edgetune command from the repository root; a finished run in --work is reused, not retrained."""
    run = Path(args[args.index("--run-dir") + 1])
    if (run / "adapter" / "adapter_config.json").is_file():
        print(f"reusing the finished run {run}")
        return float("nan")
    t0 = time.time()
    print("$", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True)
    return time.time() - t0


def metric(metrics: Path, key: str) -> list[float]:
    """One value per training step from a metrics.jsonl."""
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return [x[key] for x in lines if x.get("event") == "TrainStep" and key in x]


def task_score(run: Path, label: str, match: str, with_base: bool = False) -> list[dict]:
    """`edgetune eval RUN --data pirate_eval.jsonl --match MATCH` (base first, then the run's adapter)."""
    from edgetune.evaluate import run_eval

    results = run_eval(str(run), str(DATA / "pirate_eval.jsonl"), max_tokens=EVAL_TOKENS, match=match)
    results[0]["label"] = "base"
    for r in results[1:]:
        r["label"] = label
    return results if with_base else results[1:]


def print_scores(results: list[dict]) -> None:
    print(f"  held-out questions ({results[0]['n']}): task score = share of greedy replies ({EVAL_TOKENS} tokens) "
          f"matching {results[0]['match']}; held-out loss = nats/token of the reference replies")
    for r in results:
        print(f"    {r['label']:30s} task score {r['task_score']:6.1%}   held-out loss {r['heldout_loss']:.3f}")
    for e in results[-1]["examples"][:4]:  # so a gamed score shows: the replies themselves
        print(f"    {results[-1]['label']}: {e['prompt']!r} -> {e['reply']!r}")


def grpo(work: Path, config: Path) -> None:
    run = work / "grpo"
    seconds = sh("edgetune", "train", "-c", str(config), "--run-dir", str(run))
    r = metric(run / "stages" / "2-grpo" / "metrics.jsonl", "reward")
    from edgetune.config import resolve

    match = f"regex:{resolve(config).method.reward_pattern}"  # the GRPO reward's own rule
    scores = task_score(run / "stages" / "1-sft", "after SFT stage (before GRPO)", match, with_base=True)
    scores += task_score(run, "after GRPO", match)
    print(f"\nGRPO ({len(r)} steps after the SFT stage, {seconds:.0f} s in all)")
    print(f"  mean reward, first 5 steps {statistics.mean(r[:5]):.3f}  ->  last 5 steps {statistics.mean(r[-5:]):.3f}")
    print(f"  per step: {' '.join(f'{x:.2f}' for x in r)}")
    print_scores(scores)


def dpo(work: Path, steps: int) -> None:
    from edgetune.data.preference import load_method_rows
    from edgetune.evaluate import targets_for
    from edgetune.preference_eval import score_pairs

    run = work / "dpo"
    seconds = sh("edgetune", "train", "--model", "default", "--method", "dpo", "--data",
                 str(DATA / "pirate_pairs.jsonl"), "--max-steps", str(steps), "--lr", "5e-5", "--run-dir", str(run))
    acc = metric(run / "metrics.jsonl", "rewards/accuracies")
    rows, _ = load_method_rows(str(DATA / "pirate_pairs_eval.jsonl"), "dpo")
    results = score_pairs(targets_for(str(run)), rows)
    from edgetune.evaluate import PIRATE_MATCH

    scores = task_score(run, "after DPO", PIRATE_MATCH, with_base=True)
    print(f"\nDPO ({steps} steps, {seconds:.0f} s)")
    print(f"  training-batch preference accuracy, first 5 steps {statistics.mean(acc[:5]):.2f} -> last 5 "
          f"{statistics.mean(acc[-5:]):.2f}")
    print(f"  held-out pairs ({len(rows)}):")
    for res in results:
        label = "base" if res is results[0] else "after DPO"
        print(f"    {label:12s} preference accuracy {res['preference_accuracy']:6.1%}   "
              f"mean log-prob margin {res['mean_margin']:+8.2f}")
    print_scores(scores)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["grpo", "dpo"])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--grpo-config", type=Path, default=DATA / "pirate_sft_grpo.toml")
    ap.add_argument("--dpo-steps", type=int, default=40)
    a = ap.parse_args()
    from edgetune.console import quiet_libraries

    quiet_libraries()
    work = a.work or Path(tempfile.mkdtemp(prefix="edgetune-quality-"))
    print(f"runs in {work}")
    if a.only in (None, "grpo"):
        grpo(work, a.grpo_config)
    if a.only in (None, "dpo"):
        dpo(work, a.dpo_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
