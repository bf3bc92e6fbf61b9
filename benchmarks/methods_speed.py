"""Seconds per step of DPO, KTO and GRPO through edgetune vs plain TRL code, same settings, side by side.

    python benchmarks/methods_speed.py [--method dpo,kto,grpo] [--steps 8] [--repeats 2] [--tiny]

Like train_overhead.py (whose timer and process-per-run driver this reuses): runs are fresh processes, interleaved
edgetune/plain per method, the first 2 steps dropped as warm-up. Data: DPO pairs and KTO rows built from the
shipped pirate data (chosen = the pirate reply, rejected = the same reply without the pirate opening), GRPO
prompts with the `regex_format` reward. "Plain TRL" on CPU: TRL 1.15's trainers call a Triton kernel that the CPU
torch wheel lacks, so the plain side installs the same plain-PyTorch drop-in edgetune uses
(edgetune.trl_compat.ensure_trl_runs_here); everything else is stock TRL.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import train_overhead as base  # noqa: E402  (timer, one_run driver, model choice)

PIRATE = Path(__file__).resolve().parents[1] / "edgetune" / "sample_data" / "pirate_chat.jsonl"


def method_data(method: str, work: Path) -> str:
    rows = [json.loads(x)["messages"] for x in PIRATE.read_text().splitlines()[:96]]
    out = []
    for i, m in enumerate(rows):
        prompt, reply = m[0]["content"], m[1]["content"]
        plain = reply.removeprefix("Arr! ").strip() or "I do not know."
        if method == "dpo":
            out.append({"prompt": prompt, "chosen": reply, "rejected": plain})
        elif method == "kto":
            out.append({"prompt": prompt, "completion": reply if i % 2 else plain, "label": bool(i % 2)})
        else:
            out.append({"prompt": prompt, "answer": reply})
    path = work / f"{method}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in out) + "\n")
    return str(path)


def run_edgetune(s: dict, out_dir: Path) -> dict:
    from edgetune.callbacks import StopOnSignal
    from edgetune.config import resolve
    from edgetune.train import train

    StepTimer = base.step_timer_class()

    class Timer(StepTimer, StopOnSignal):
        def __init__(self):
            StopOnSignal.__init__(self)
            StepTimer.__init__(self)

    method = {"name": s["method"], "beta": 0.1}
    if s["method"] == "grpo":
        method.update(rewards=["regex_format"], num_generations=4, max_completion_length=32)
    cfg = resolve(None, {"model": {"ref": s["model"], "load_in_4bit": False}, "data": {"path": s["data"]},
                         "run_dir": str(out_dir), "method": method,
                         "lora": {"r": 16, "alpha": 32, "target_modules": base.TARGETS},
                         "train": {"engine": "hf", "max_steps": s["steps"], "batch_size": 4, "max_length": 512,
                                   "learning_rate": 5e-5, "warmup_steps": 2, "seed": 42, "precision": "fp32",
                                   "gradient_checkpointing": False, "save_steps": s["steps"] + 1}}, profile="cpu")
    timer = Timer()
    train(cfg, stopper=timer)
    return {**timer.times(), "final_loss": 0.0}


def run_plain(s: dict, out_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgetune.data.preference import load_method_rows
    from edgetune.trl_compat import ensure_trl_runs_here

    ensure_trl_runs_here()
    tok = AutoTokenizer.from_pretrained(s["model"])
    rows, _ = load_method_rows(s["data"], s["method"])  # the same normalised rows
    model = AutoModelForCausalLM.from_pretrained(s["model"], dtype=torch.float32)
    common = dict(output_dir=str(out_dir), max_steps=s["steps"], per_device_train_batch_size=4, learning_rate=5e-5,
                  lr_scheduler_type="cosine", warmup_steps=2, seed=42, bf16=False, use_cpu=True, logging_steps=1,
                  save_strategy="no", report_to="none", optim="adamw_torch", gradient_checkpointing=False)
    peft_config = LoraConfig(r=16, lora_alpha=32, target_modules=base.TARGETS, task_type="CAUSAL_LM")
    timer = base.step_timer_class()()
    ds = Dataset.from_list(rows)
    if s["method"] == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common, beta=0.1, max_length=512), train_dataset=ds,
                             processing_class=tok, peft_config=peft_config, callbacks=[timer])
    elif s["method"] == "kto":
        from trl import KTOConfig, KTOTrainer

        trainer = KTOTrainer(model=model, args=KTOConfig(**common, beta=0.1, max_length=512), train_dataset=ds,
                             processing_class=tok, peft_config=peft_config, callbacks=[timer])
    else:
        from trl import GRPOConfig, GRPOTrainer

        from edgetune.methods.rewards import make_regex_format

        fmt = make_regex_format(r"^Arr!")
        trainer = GRPOTrainer(model=model, args=GRPOConfig(**common, beta=0.0, num_generations=4,
                                                           max_completion_length=32),
                              train_dataset=ds, processing_class=tok, reward_funcs=[fmt], peft_config=peft_config,
                              callbacks=[timer])
    trainer.train()
    return {**timer.times(), "final_loss": 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="dpo,kto,grpo")
    p.add_argument("--model", default="")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--_one")
    p.add_argument("--_settings")
    p.add_argument("--_out")
    args = p.parse_args()
    if args._one:
        run = run_edgetune if args._one == "edgetune" else run_plain
        print(json.dumps(run(json.loads(args._settings), Path(args._out))))
        return
    base.__file__ = __file__  # one_run re-invokes "this" script for each child process
    results = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="edgetune-methods-") as tmp:
        model = base.model_for(args, Path(tmp))
        for method in [m.strip() for m in args.method.split(",") if m.strip()]:
            s = {"method": method, "model": model, "data": method_data(method, Path(tmp)), "steps": args.steps}
            med = {"edgetune": [], "plain": []}
            for i in range(args.repeats):
                for side in ("edgetune", "plain"):
                    r = base.one_run(side, s)
                    med[side].append(statistics.median(r["step_s"]))
                    print(f"{method} run {i + 1}/{args.repeats} {side:8s}: {med[side][-1]:.3f} s/step", flush=True)
            e, q = statistics.median(med["edgetune"]), statistics.median(med["plain"])
            results[method] = {"edgetune_s_per_step": round(e, 3), "plain_s_per_step": round(q, 3), "ratio": round(e / q, 3)}
    print()
    print(f"model {model}; batch 4, max_length 512, LoRA r16 all linear, fp32 CPU; GRPO: 4 generations x 32 tokens")
    for m, r in results.items():
        print(f"{m:5s} edgetune {r['edgetune_s_per_step']:.3f} s/step  plain TRL {r['plain_s_per_step']:.3f} s/step  "
              f"ratio {r['ratio']:.3f}")
    print(f"[{time.time() - t0:.0f} s total]")
    print(json.dumps({"benchmark": "methods_speed", "results": results, "steps": args.steps, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
