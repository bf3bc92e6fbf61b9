"""The memory plan's estimate beside the measured peak RSS of `edgetune train` on CPU.

    python benchmarks/plan_accuracy.py [--steps 3] [--settings b1-256,b4-256,b4-512]

Each setting trains the embedded default model (SmolLM2-135M-Instruct, the `cpu` profile: fp32 LoRA r=16, no
checkpointing) for a few SFT steps through the CLI in a fresh process. The data is the shipped pirate chat set with
every 12 neighbouring conversations joined into one multi-turn conversation, so each row is longer than max_length
and is cut to it: every step holds exactly batch x max_length tokens (packing would make one long sequence instead).

Measured: the child's peak RSS as the kernel counts it (ru_maxrss from wait4), and by polling (psutil, every 20 ms)
the peak before the first training step (runtime + weights). Estimated: edgetune.memory.plan for the same config,
at the sequence length the CLI's own plan note reports. Goal: estimate within +-15% of the measured peak. Sizes in
GiB, like the plan's. Prints one line per setting and a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PIRATE = Path(__file__).resolve().parents[1] / "edgetune" / "sample_data" / "pirate_chat.jsonl"
GIB = 1024**3
SETTINGS = {"b1-256": (1, 256), "b4-256": (4, 256), "b1-1024": (1, 1024), "b4-512": (4, 512), "b2-512": (2, 512)}
JOIN = 12  # conversations per training row (~50 tokens each): longer than every max_length above


def long_rows(work: Path) -> Path:
    convs = [json.loads(x)["messages"] for x in PIRATE.read_text().splitlines() if x.strip()]
    rows = [{"messages": [m for c in convs[i:i + JOIN] for m in c]} for i in range(0, len(convs) - JOIN + 1, JOIN)]
    path = work / "pirate_long.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def overrides(data: Path, run_dir: Path, batch: int, max_length: int, steps: int) -> dict:
    return {"model": {"ref": "default"}, "data": {"path": str(data)}, "run_dir": str(run_dir),
            "train": {"batch_size": batch, "grad_accum": 1, "max_length": max_length, "max_steps": steps,
                      "save_steps": steps + 1}, "export": {"gguf": []}}


def cli_args(o: dict) -> list[str]:
    t = o["train"]
    return ["train", "--profile", "cpu", "--model", o["model"]["ref"], "--data", o["data"]["path"], "--run-dir",
            o["run_dir"], "--batch-size", str(t["batch_size"]), "--grad-accum", "1", "--max-length",
            str(t["max_length"]), "--max-steps", str(t["max_steps"]), "--save-steps", str(t["save_steps"]),
            "--no-packing", "--gguf", "none"]


def measure(args: list[str]) -> dict:
    """Run `edgetune ARGS` in a fresh process: its output, peak RSS (exact) and the polled peak before training."""
    import psutil

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-c", "import sys; from edgetune.cli import entry; sys.argv[0] = 'edgetune'; entry()", *args]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    training = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(">> train"):
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ps, before = psutil.Process(proc.pid), 0
    while True:  # wait4 (not Popen.poll) reaps the child: its rusage holds the exact peak RSS
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            rss = ps.memory_info().rss
        except psutil.NoSuchProcess:
            rss = 0
        if not training.is_set():
            before = max(before, rss)
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    out = "".join(lines)
    if proc.returncode != 0:
        sys.stderr.write(out[-6000:])
        raise SystemExit(f"edgetune {args[0]} failed (exit {proc.returncode})")
    return {"peak_gb": usage.ru_maxrss * 1024 / GIB, "before_train_gb": before / GIB, "seconds": time.time() - t0,
            "output": out}


def planned(o: dict, seq: int):
    """edgetune.memory.plan for the config the CLI resolved, at the sequence length its plan reported."""
    from transformers import AutoConfig

    from edgetune import config as C
    from edgetune import hardware, models
    from edgetune.engines import choose_precision
    from edgetune.memory import ModelShape, plan

    cfg = C.resolve(None, o, profile="cpu")
    hw = hardware.detect()
    shape = ModelShape.from_config(AutoConfig.from_pretrained(models.resolve(cfg.model.ref).path))
    return plan(cfg, shape, hw, choose_precision(cfg.train.precision, hw), longest=seq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per setting")
    parser.add_argument("--settings", default="b1-256,b4-256,b4-512",
                        help=f"comma-separated, from: {', '.join(SETTINGS)} (batch-max_length)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="edgetune-plan-") as tmp:
        data = long_rows(Path(tmp))
        for name in args.settings.split(","):
            batch, max_length = SETTINGS[name]
            o = overrides(data, Path(tmp) / name, batch, max_length, args.steps)
            m = measure(cli_args(o))
            seq = re.search(r"sequences? of (\d+) tokens per step", m["output"])
            p = planned(o, int(seq.group(1)) if seq else max_length)
            est = p.estimate
            ratio = est.total_gb / m["peak_gb"]
            results.append({"setting": name, "batch": p.batch, "seq": p.seq_len, "estimate_gb": round(est.total_gb, 3),
                            "measured_peak_gb": round(m["peak_gb"], 3), "ratio": round(ratio, 3),
                            "before_train_gb": round(m["before_train_gb"], 3), "seconds": round(m["seconds"], 1),
                            "terms": {k: round(getattr(est, k), 3) for k in ("weights_gb", "adapter_gb",
                                      "activations_gb", "logits_gb", "overhead_gb")}})
            print(f"{name:8s} batch {p.batch} x {p.seq_len} tokens: estimate {est.total_gb:.2f} GB, measured peak "
                  f"{m['peak_gb']:.2f} GB, ratio {ratio:.2f} ({'ok' if abs(ratio - 1) <= 0.15 else 'OFF'}); before "
                  f"training {m['before_train_gb']:.2f} GB (weights still memory-mapped); {m['seconds']:.0f} s",
                  flush=True)
    print(json.dumps({"steps": args.steps, "results": results}))


if __name__ == "__main__":
    main()
