"""Every supported family tried as a new user would, through the CLI only, on a tiny random checkpoint of its real
architecture (tests/families.py: hard features on, the family's real chat template and tokenizer kind):

    edgetune validate -> train (SFT, its own template) -> export --gguf f16 q8_0 q4_k_m [--onnx fp32] -> chat -> eval

and prints, per family: the loss at the first and last step, each exported file's verification against the merged
model as llama.cpp runs it (mean and worst-position KL divergence, top-1, token ids), whether llama.cpp and ONNX
treat every stop id as end of generation, and seconds per command.

    python benchmarks/families.py [FAMILY ...]
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from families import FAMILIES, build_family  # noqa: E402
from shared_data import write_rows  # noqa: E402

ONNX = {"llama3_2", "mistral", "phi3_5", "phi4_mini", "qwen2", "qwen3"}  # what edgetune.export.onnx_support allows
CONVS = [[{"role": "system", "content": "Talk like a pirate."},
          {"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"Arr! {2 * i}, matey."},
          {"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "Arr, fair winds."}]
         for i in range(24)]


def cli(*args) -> tuple[float, str]:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"edgetune {' '.join(map(str, args))} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.time() - t0, out.stdout


def run_family(name: str, root: Path) -> dict:
    model = build_family(name, root / "model")
    data = write_rows(root / "chat.jsonl", [{"messages": c} for c in CONVS])
    run = root / "run"
    seconds = {"validate": cli("validate", "--data", data, "--model", model)[0]}
    seconds["train"] = cli("train", "--model", model, "--data", data, "--max-steps", 20, "--lr", "2e-3",
                           "--no-4bit", "--run-dir", run, "--name", name)[0]
    export = ["export", run, "--gguf", "f16", "--gguf", "q8_0", "--gguf", "q4_k_m"]
    seconds["export"] = cli(*export, *(["--onnx", "fp32"] if name in ONNX else []))[0]
    seconds["chat"] = cli("chat", run, "--prompt", "What is 2 plus 2?", "--max-tokens", "16")[0]
    rows = write_rows(root / "eval.jsonl", [{"prompt": f"What is {i} plus {i}?", "answer": f"Arr! {2 * i}, matey."}
                                             for i in range(3)])
    seconds["eval"] = cli("eval", run, "--data", rows, "--match", "prefix:1", "--max-tokens", "16")[0]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if s.get("event") == "TrainStep" and s.get("loss") is not None]
    report = json.loads((run / "report.json").read_text())
    files = {r["type"]: r for r in report["export"]["files"]}
    onnx = {r["type"]: r for r in (report.get("onnx") or {}).get("variants", [])}
    return {"loss": (losses[0], losses[-1]), "files": files, "onnx": onnx, "seconds": seconds}


def main(names: list[str]) -> None:
    print(f"{'family':10} {'loss':>13}  {'file':6} {'mean KLD':>9} {'worst':>9} {'top-1':>6} ids  stops  "
          f"{'s train/export':>14}")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_family(name, Path(tmp))
        first, last = r["loss"]
        for i, (qtype, f) in enumerate([*r["files"].items(), *(("onnx", v) for v in r["onnx"].values())]):
            head = f"{name:10} {first:6.2f}->{last:5.2f}" if i == 0 else " " * 24
            secs = f"{r['seconds']['train']:5.0f}/{r['seconds']['export']:5.0f}" if i == 0 else ""
            print(f"{head}  {qtype:6} {f['mean_kld']:9.2e} {f.get('max_kld', 0):9.2e} {f['top1']:6.3f} "
                  f"{'same' if f['token_ids_identical'] else 'DIFF'} {'yes' if f['end_of_turn_stops'] else 'NO':>5}"
                  f"  {secs:>14}")


if __name__ == "__main__":
    main(sys.argv[1:] or sorted(FAMILIES))
