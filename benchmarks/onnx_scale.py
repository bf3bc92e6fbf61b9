"""Time and memory of `edgetune export RUN --onnx int4` (build, quantize, verify) at a real size, as a user runs it.

    python benchmarks/onnx_scale.py RUN_DIR [--baseline REV] [--threads N]

RUN_DIR is a merged run (e.g. benchmarks/scale.py 1b --keep DIR --no-eval leaves DIR/run-1b). Prints wall seconds
and peak RSS (/usr/bin/time -v) and peak anonymous memory (sampled) of the export, with the code under test and,
with --baseline, with git revision REV's code in the same run (its own int4 recipe). Each export writes RUN_DIR/onnx/,
removed after it (a 1B int4 folder is ~1 GB), so the run must not hold ONNX exports of its own (refused); its
report.json is put back as it was.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import baseline_env, stage  # noqa: E402


def export_int4(run: Path, root: Path, env: dict | None) -> dict:
    shutil.rmtree(run / "onnx", ignore_errors=True)
    row = stage(["export", run, "--onnx", "int4"], env, root)
    report = json.loads((run / "report.json").read_text())
    int4 = [v for v in report.get("onnx", {}).get("variants", []) if v.get("type") == "int4"]
    keys = ("size_bytes", "top1", "mean_kld", "max_kld", "positions", "stops_at_eos", "passed")
    row["onnx"] = {k: int4[-1][k] for k in keys if int4 and k in int4[-1]}
    shutil.rmtree(run / "onnx", ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--baseline", help="also export with this git revision's code")
    args = ap.parse_args()
    if any((args.run_dir / "onnx").glob("*")):
        raise SystemExit(f"{args.run_dir / 'onnx'} holds exports; this benchmark removes that folder after each "
                         "export, so move them elsewhere (or use a copy of the run) first")
    report = args.run_dir / "report.json"
    saved = report.read_bytes() if report.is_file() else None
    root = Path(tempfile.mkdtemp(prefix="onnx-scale-"))
    try:
        rows = {"code under test": export_int4(args.run_dir, root, None)}
        if args.baseline:
            rows[f"@{args.baseline}"] = export_int4(args.run_dir, root, baseline_env(args.baseline, root))
    finally:
        if saved is not None:
            report.write_bytes(saved)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=Path(__file__).resolve().parents[1], check=False)
    for label, r in rows.items():
        print(f"{label:18} {r['seconds']:7.0f} s  peak RSS {r['peak_rss_gb']:5.2f} GB  peak anon "
              f"{r['peak_anon_gb']:5.2f} GB  ({r['at_peak']})")
        print(f"{'':18} {json.dumps(r['onnx'])[:400]}")


if __name__ == "__main__":
    main()
