"""Training speed through edgetune vs plain TRL code, same SFT configuration, side by side.

    python benchmarks/train_overhead.py [--model DIR] [--steps 12] [--repeats 3] [--tiny]

Each run is a fresh process; runs are interleaved (edgetune, plain, edgetune, plain, ...) so drifting machine load
hits both sides alike. Both sides train the same model on the same pre-tokenized, assistant-masked dataset (built
once per run by edgetune.data.build_dataset, outside the timing) with the same seed, so every step sees the same
batch. Timing: one TrainerCallback on both sides records the wall clock at each on_step_begin; a step's time is
the gap to the next step's begin (so data loading, logging and every callback count), and the first 2 steps are
dropped as warm-up. Also shown: compute-only time (on_step_begin -> on_step_end).

"Plain TRL" caveat: on CPU, TRL 1.15's SFTTrainer cannot compute its own loss (it calls a Triton kernel; the CPU
torch wheel has no Triton), so the plain side subclasses SFTTrainer with the same minimal override edgetune uses:
compute_loss = transformers.Trainer.compute_loss (the standard causal-LM loss). Everything else is stock TRL.

Prints per-side medians (s/step), the ratio edgetune/plain (goal <= 1.03), the configuration, and a final JSON line.
On a shared machine, load drifts between runs: also shown are the ratio of each interleaved pair (neighbours in
time) and best run vs best run, which contention disturbs least.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 2
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "edgetune" / "sample_data" / "pirate_chat.jsonl"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def settings(args) -> dict:
    """The one configuration both sides use (the `cpu` profile's training settings)."""
    return dict(model=args.model, data=str(SAMPLE_DATA), steps=args.steps, batch_size=4, max_length=512, r=16,
                alpha=32, dropout=0.0, targets=TARGETS, learning_rate=2e-4, warmup_steps=2, scheduler="cosine",
                seed=42, precision="fp32", gradient_checkpointing=False, load_in_4bit=False, logging_steps=1)


# --- the timing callback (same class on both sides) ---------------------------------------------------------------

def step_timer_class():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begins, self.ends = [], []

        def on_step_begin(self, args, state, control, **kw):
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())
            return super().on_step_end(args, state, control, **kw)

        def times(self) -> dict:
            loop = [b - a for a, b in zip(self.begins, self.begins[1:])][WARMUP_STEPS:]
            compute = [e - b for b, e in zip(self.begins, self.ends)][WARMUP_STEPS:len(self.begins) - 1]
            return {"step_s": loop, "compute_s": compute}

    return StepTimer


# --- one run of each side (each in its own process) ---------------------------------------------------------------

def run_edgetune(s: dict, out_dir: Path) -> dict:
    from edgetune.callbacks import StopOnSignal
    from edgetune.config import RunConfig
    from edgetune.train import train

    StepTimer = step_timer_class()

    class EdgetuneTimer(StepTimer, StopOnSignal):  # train() takes extra callbacks only as its stopper
        def __init__(self):
            StopOnSignal.__init__(self)
            StepTimer.__init__(self)

    cfg = RunConfig(name="bench", run_dir=str(out_dir), profile="cpu")
    cfg.model.ref, cfg.model.load_in_4bit = s["model"], s["load_in_4bit"]
    cfg.data.path = s["data"]
    cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules = s["r"], s["alpha"], s["dropout"], s["targets"]
    t = cfg.train
    t.engine, t.max_steps, t.batch_size, t.grad_accum, t.max_length = "hf", s["steps"], s["batch_size"], 1, s["max_length"]
    t.learning_rate, t.warmup_steps, t.lr_scheduler, t.seed = s["learning_rate"], s["warmup_steps"], s["scheduler"], s["seed"]
    t.precision, t.gradient_checkpointing, t.logging_steps = s["precision"], s["gradient_checkpointing"], s["logging_steps"]
    t.save_steps = s["steps"] + 1  # no periodic checkpoint inside the timed steps (plain side saves none either)
    timer = EdgetuneTimer()
    result = train(cfg, stopper=timer)
    return {**timer.times(), "final_loss": result.final_loss}


def run_plain(s: dict, out_dir: Path) -> dict:
    """What a user would write with transformers + PEFT + TRL directly."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer
    from trl import SFTConfig, SFTTrainer

    from edgetune.config import DataConfig
    from edgetune.data import build_dataset

    tok = AutoTokenizer.from_pretrained(s["model"])
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    dataset, _ = build_dataset(tok, DataConfig(path=s["data"]), s["max_length"])  # the same pre-tokenized rows
    model = AutoModelForCausalLM.from_pretrained(s["model"], dtype=torch.float32)

    class SFTTrainerCPU(SFTTrainer):  # TRL 1.15's own loss needs Triton (absent on CPU): the stock causal-LM loss
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    args = SFTConfig(output_dir=str(out_dir), max_steps=s["steps"], per_device_train_batch_size=s["batch_size"],
                     learning_rate=s["learning_rate"], lr_scheduler_type=s["scheduler"], warmup_steps=s["warmup_steps"],
                     seed=s["seed"], max_length=s["max_length"], bf16=False, use_cpu=True,
                     gradient_checkpointing=s["gradient_checkpointing"], logging_steps=s["logging_steps"],
                     save_strategy="no", report_to="none", optim="adamw_torch")
    peft_config = LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=s["dropout"], target_modules=s["targets"],
                             task_type="CAUSAL_LM")
    timer = step_timer_class()()
    trainer = SFTTrainerCPU(model=model, args=args, train_dataset=dataset, processing_class=tok,
                            peft_config=peft_config, callbacks=[timer])
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {**timer.times(), "final_loss": losses[-1] if losses else out.training_loss}


def one_run(side: str, s: dict) -> dict:
    """Run one side in a fresh process; returns its step times."""
    with tempfile.TemporaryDirectory(prefix=f"edgetune-bench-{side}-") as tmp:
        cmd = [sys.executable, __file__, "--_one", side, "--_settings", json.dumps(s), "--_out", tmp]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
            raise SystemExit(f"{side} run failed (exit {proc.returncode})")
        return json.loads(proc.stdout.strip().splitlines()[-1])


# --- driver -------------------------------------------------------------------------------------------------------

def model_for(args, work: Path) -> str:
    if args.model:
        return args.model
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import tinymodels

        tok = tinymodels.build_tiny_tokenizer(work / "tok")
        return str(tinymodels.build_tiny_model(work / "model", tok))
    from edgetune.models import resolve

    return resolve("default").path  # SmolLM2-135M-Instruct, converted and cached once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="HF model dir (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, interleaved")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model, for a quick smoke run")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    parser.add_argument("--_settings", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:  # child process: one run of one side
        run = run_edgetune if args._one == "edgetune" else run_plain
        print(json.dumps(run(json.loads(args._settings), Path(args._out))))
        return
    if args.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must be > {WARMUP_STEPS + 1} (the first {WARMUP_STEPS} are warm-up)")

    with tempfile.TemporaryDirectory(prefix="edgetune-bench-") as tmp:
        args.model = model_for(args, Path(tmp))
        s = settings(args)
        runs = {"edgetune": [], "plain": []}
        t0 = time.time()
        for i in range(args.repeats):
            for side in ("edgetune", "plain"):
                r = one_run(side, s)
                runs[side].append(r)
                print(f"run {i + 1}/{args.repeats} {side:8s}: median {statistics.median(r['step_s']):.3f} s/step "
                      f"(compute {statistics.median(r['compute_s']):.3f}), final loss {r['final_loss']:.3f}", flush=True)
    report(s, runs, time.time() - t0)


def report(s: dict, runs: dict, seconds: float) -> None:
    run_med = {side: [statistics.median(r["step_s"]) for r in rs] for side, rs in runs.items()}
    med = {side: statistics.median([t for r in rs for t in r["step_s"]]) for side, rs in runs.items()}
    comp = {side: statistics.median([t for r in rs for t in r["compute_s"]]) for side, rs in runs.items()}
    ratio = med["edgetune"] / med["plain"]
    pairs = [a / b for a, b in zip(run_med["edgetune"], run_med["plain"])]  # neighbours in time share the load
    best = min(run_med["edgetune"]) / min(run_med["plain"])  # the least-contended run of each side
    print()
    print("configuration: " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "targets") + ", targets=all linear")
    print(f"timing: seconds per step over steps {WARMUP_STEPS + 1}..{s['steps'] - 1} of each run, "
          f"{len(runs['plain'])} interleaved runs per side, each a fresh process")
    print("plain side: stock TRL SFTTrainer + peft_config, with compute_loss = Trainer.compute_loss "
          "(TRL 1.15's loss needs Triton, absent on CPU) -- the same override edgetune uses")
    for side in ("edgetune", "plain"):
        print(f"{side:8s} median {med[side]:.3f} s/step (compute only {comp[side]:.3f})  "
              f"run medians {[round(x, 3) for x in run_med[side]]}")
    print(f"ratio edgetune/plain: {ratio:.3f} (goal <= 1.03); per interleaved pair {[round(x, 3) for x in pairs]} "
          f"(median {statistics.median(pairs):.3f}); best run vs best run {best:.3f}  [{seconds:.0f} s total]")
    print(json.dumps({"benchmark": "train_overhead", "edgetune_s_per_step": round(med["edgetune"], 4),
                      "plain_s_per_step": round(med["plain"], 4), "ratio": round(ratio, 4),
                      "ratio_pairs": [round(x, 4) for x in pairs], "ratio_pairs_median": round(statistics.median(pairs), 4),
                      "ratio_best": round(best, 4), "edgetune_compute_s": round(comp["edgetune"], 4),
                      "plain_compute_s": round(comp["plain"], 4), "repeats": len(runs["plain"]), "settings": s}))

if __name__ == "__main__":
    main()
