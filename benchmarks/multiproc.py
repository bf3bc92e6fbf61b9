"""Data-parallel training through `edgetune train --nproc N`: seconds per step and samples/s, 1 vs N processes.

    python benchmarks/multiproc.py [--model default] [--steps 12] [--batch 4] [--nproc 1,2] [--repeats 2]

Each configuration is a fresh `edgetune train` (SFT on the shipped pirate chat data) with the same effective batch
(--batch samples per optimizer step, split evenly over the processes) and the same seed. A step's time is the gap
between consecutive TrainStep events in metrics.jsonl (rank 0 logs every step); the first 2 steps are dropped as
warm-up. Also shown: wall time of the whole command (process start, model load, data preparation) and the last
loss, which should agree across process counts. Runs are interleaved (1, 2, 1, 2, ...) so drifting machine load
hits every process count alike; per count the median and the best run are printed (on a shared machine the best is
the one contention disturbed least). Threads: one process uses torch's default (one per core); `--nproc N` gives
each process cores / N; `--threads T` sets T for every process, to compare like with like.

On a CPU machine the processes share the cores (gloo, one thread each when 2 processes share 2 cores): this
measures the wiring's cost, not a speed-up. On a multi-GPU box the same script measures the scaling (one GPU per
process; pass --nproc 1,2,4,8 and a larger --batch).
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


def run(args, nproc: int, root: Path, rep: int) -> dict:
    run_dir = root / f"nproc{nproc}-{rep}"
    if args.batch % nproc:
        raise SystemExit(f"--batch {args.batch} does not split over {nproc} processes")
    cmd = [sys.executable, "-m", "edgetune.cli", "train", "--model", args.model, "--data", str(SAMPLE_DATA),
           "--max-steps", str(args.steps), "--batch-size", str(args.batch // nproc), "--grad-accum", "1",
           "--max-length", str(args.max_length), "--save-steps", "100000", "--nproc", str(nproc),
           "--run-dir", str(run_dir), *(["--profile", args.profile] if args.profile else [])]
    t0 = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if done.returncode:
        raise SystemExit(f"nproc {nproc} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"TrainStep"' in x]
    times = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])][WARMUP_STEPS - 1:]
    s_step = statistics.median(times)
    return {"nproc": nproc, "per_device_batch": args.batch // nproc, "effective_batch": args.batch,
            "s_per_step": round(s_step, 3), "samples_per_s": round(args.batch / s_step, 2),
            "wall_s": round(wall, 1), "steps": len(rows), "last_loss": round(rows[-1]["loss"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4, help="effective batch (samples per optimizer step)")
    ap.add_argument("--nproc", default="1,2", help="comma-separated process counts")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--profile", default="", help="hardware profile (default: detected)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="OMP threads per process (default: torch's choice for 1 "
                    "process, cores / N for N processes, as `--nproc` sets them)")
    args = ap.parse_args()
    import torch

    where = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() \
        else f"CPU, {os.cpu_count()} cores"
    print(f"# {where}; model {args.model}; {args.steps} steps, effective batch {args.batch}, max_length "
          f"{args.max_length}; median of steps {WARMUP_STEPS + 1}..{args.steps}; threads per process "
          f"{args.threads or 'default'}; load average {os.getloadavg()[0]:.1f}")
    counts = [int(x) for x in args.nproc.split(",")]
    results: dict[int, list[dict]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="edgetune-multiproc-") as tmp:
        for rep in range(args.repeats):
            for n in counts:
                r = run(args, n, Path(tmp), rep)
                results[n].append(r)
                print(f"run {rep + 1} nproc {n}: {r['per_device_batch']} per device x {n}  {r['s_per_step']:.2f} s/step  "
                      f"{r['samples_per_s']:.2f} samples/s  wall {r['wall_s']:.0f} s  last loss {r['last_loss']}",
                      flush=True)
    summary = []
    for n, rs in results.items():
        med = statistics.median(r["s_per_step"] for r in rs)
        best = min(r["s_per_step"] for r in rs)
        summary.append({"nproc": n, "median_s_per_step": round(med, 3), "best_s_per_step": round(best, 3),
                        "median_samples_per_s": round(args.batch / med, 2), "best_samples_per_s": round(args.batch / best, 2),
                        "last_loss": sorted({r["last_loss"] for r in rs})})
        print(f"nproc {n}: median {med:.2f} s/step ({args.batch / med:.2f} samples/s), best {best:.2f} s/step "
              f"({args.batch / best:.2f} samples/s); last loss {summary[-1]['last_loss']}")
    print(json.dumps({"where": where, "summary": summary, "runs": results}))


if __name__ == "__main__":
    main()
