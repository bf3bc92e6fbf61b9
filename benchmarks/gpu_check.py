"""The prepared GPU check of the Unsloth path: one run of at most 8 minutes on a single NVIDIA H100/H200 with no
internet (Python 3.12, torch 2.11 + CUDA 13, transformers 5.17, peft, accelerate, triton preinstalled; everything
else travels in .whl/ with the repository, 64 MiB together).

On the GPU it builds Llama-3.2-1B- and 3B-shaped checkpoints (random weights, the embedded tokenizer), then, each
step in its own process through edgetune's CLI (Unsloth patches transformers for the whole process; peaks are per
process), prints:
  1. QLoRA SFT on the 1B shape, Unsloth vs transformers+bitsandbytes 4-bit on the same config: tokens/s and peak
     VRAM side by side, the memory plan's estimate beside each peak (goal: Unsloth >= 1.5x tokens/s, <= 0.8x VRAM;
     LLaMA-Factory measured 1.54x and 7 vs 9 GB);
  2. the labels the trainer sees under Unsloth: -100 on every token outside the assistant replies;
  3. DPO and GRPO, 5 steps each under Unsloth;
  4. a 3B QLoRA SFT at 2048 tokens with the gpu-8gb profile under an 8 GB cap (torch's per-process memory fraction),
     then merge and F16 export of that run under the same cap.

    python benchmarks/gpu_check.py --fetch    # here (package registry reachable): slim cp312 wheels into .whl/
    python benchmarks/gpu_check.py --plan     # the wheels and their size with the repository; exit 1 over 64 MiB
    python benchmarks/gpu_check.py            # on the GPU machine (installs .whl/ with --no-deps first)
    python benchmarks/gpu_check.py --smoke    # the same steps on a CPU: tiny shapes, HF engine, no cap (wiring only)
    python benchmarks/gpu_check.py --planner  # instead: the memory plan vs measured peaks (SFT at 512/1024/2048
                                              # tokens per engine, DPO, GRPO; table by benchmarks/plan_cuda.py)
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
BUDGET = 64 * 1024**2
CARD_GB = 8.0
# Not preinstalled there. Each: (requirement, paths inside the wheel not needed for training, dropped by --fetch).
CARRY = {
    "bitsandbytes": ("bitsandbytes==0.50.2", ("libbitsandbytes_cuda11", "libbitsandbytes_cuda12", "libbitsandbytes_rocm")),
    "unsloth": ("unsloth==2026.10.9", ("studio/",)),  # its web UI: 60 MB unpacked
    "unsloth_zoo": ("unsloth_zoo==2026.10.9", ()),
    "trl": ("trl==1.15.0", ()),
    "datasets": ("datasets==4.8.5", ()),
    "gguf": ("gguf==0.19.0", ()),
    "tomli_w": ("tomli_w==1.2.0", ()),
    "tyro": ("tyro", ()), "docstring_parser": ("docstring_parser", ()), "shtab": ("shtab", ()),
    "typeguard": ("typeguard", ()), "cut_cross_entropy": ("cut_cross_entropy", ()), "msgspec": ("msgspec", ()),
    "json5": ("json5", ()), "structlog": ("structlog", ()), "nest_asyncio": ("nest_asyncio", ()),
    "dill": ("dill==0.4.0", ()), "multiprocess": ("multiprocess==0.70.18", ()), "xxhash": ("xxhash", ()),
    "sentencepiece": ("sentencepiece", ()), "typer": ("typer", ()), "shellingham": ("shellingham", ()),
    "rich": ("rich", ()), "markdown_it_py": ("markdown-it-py", ()), "mdurl": ("mdurl", ()), "pygments": ("pygments", ()),
    "einops": ("einops", ()), "torchao": ("torchao", ()), "diffusers": ("diffusers", ()),  # unsloth_zoo / unsloth ask
    # typer parses options through pydantic (imported only when a command's options are parsed, not by --help)
    "pydantic": ("pydantic==2.13.4", ()), "pydantic_core": ("pydantic-core==2.46.4", ()),
    "annotated_types": ("annotated-types", ()), "typing_inspection": ("typing-inspection", ()),
    "annotated_doc": ("annotated-doc", ()),
}
# Imported by the steps; a missing one is named before anything runs (pyarrow and pandas are too large to carry).
NEEDED_MODULES = ["torch", "transformers", "peft", "accelerate", "triton", "bitsandbytes", "trl", "datasets",
                  "pyarrow", "pandas", "unsloth", "gguf", "tomli_w", "typer", "rich", "pydantic"]
NOT_CARRIED = ("torch", "transformers", "peft", "accelerate", "triton", "pyarrow", "pandas")
SIZES = {"tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8),
         "1b": None, "3b": None}  # None: benchmarks/scale.py's Llama-3.2 shapes
TOKENIZER = WHEELS / "tokenizer"  # the embedded SmolLM2 tokenizer (its package, 140 MB with the model, stays here)


# --- wheels -------------------------------------------------------------------------------------------------------
def fetch() -> None:
    """Download the cp312 manylinux wheels and rewrite the big ones without what training never loads."""
    WHEELS.mkdir(exist_ok=True)
    tags = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none",
            *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
                          "manylinux2014_x86_64", "any") for a in ("--platform", p)]]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(WHEELS),
                    *tags, *[req for req, _ in CARRY.values()]], check=True)
    for name, (_, drop) in CARRY.items():
        if drop:
            for wheel in WHEELS.glob(f"{name}-*.whl"):
                slim(wheel, drop)
    sys.path.insert(0, str(REPO))
    from edgetune.models import resolve
    from edgetune.tokenizer import load_tokenizer

    load_tokenizer(resolve("default").path).save_pretrained(TOKENIZER)


def slim(wheel: Path, drop: tuple[str, ...]) -> None:
    """The wheel without files whose path contains any of `drop`, with its RECORD rewritten to match."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in src.infolist():
            if info.filename == record_name or any(d in info.filename for d in drop):
                continue
            data = src.read(info)
            dst.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{info.filename},sha256={digest},{len(data)}")
        dst.writestr(record_name, "\n".join(rows + [f"{record_name},,"]) + "\n")
    tmp.replace(wheel)


def repo_bytes() -> int:
    """What travels besides .whl/: tracked files plus untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / p.decode()).stat().st_size for p in out if p and (REPO / p.decode()).is_file())


def plan() -> int:
    wheels = sorted(WHEELS.glob("*.whl"))
    missing = [n for n in CARRY if not any(w.name.lower().startswith(n.lower() + "-") for w in wheels)]
    extra = sum(p.stat().st_size for p in TOKENIZER.glob("*")) if TOKENIZER.is_dir() else 0
    total = repo_bytes() + sum(w.stat().st_size for w in wheels) + extra
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
    print(f"{extra / 2**20:8.2f} MiB  tokenizer/ (the embedded SmolLM2 tokenizer)")
    print(f"{repo_bytes() / 2**20:8.2f} MiB  the repository (tracked + untracked, not ignored)")
    print(f"{total / 2**20:8.2f} MiB  together; limit {BUDGET / 2**20:.0f} MiB")
    if missing or not TOKENIZER.is_dir():
        print(f"not fetched yet: {', '.join(missing + ([] if TOKENIZER.is_dir() else ['tokenizer']))} (run --fetch)")
    print("assumed there: " + ", ".join(NOT_CARRIED) + " (imports checked before the run)")
    return 0 if total <= BUDGET and not missing and TOKENIZER.is_dir() else 1


def install() -> None:
    wheels = [str(w) for w in sorted(WHEELS.glob("*.whl"))]
    if wheels:  # --no-deps: never let pip touch the machine's torch
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *wheels], check=True)
        # what --no-deps may have left unmet, named in the log (informational: the machine's own packages vary)
        subprocess.run([sys.executable, "-m", "pip", "check"])


def missing_modules(smoke: bool) -> list[str]:
    needed = [m for m in NEEDED_MODULES if not (smoke and m in ("triton", "unsloth"))]  # GPU-only
    code = ("import importlib, json\nbad = []\nfor m in %r:\n    try:\n        importlib.import_module(m)\n"
            "    except Exception as e:\n        bad.append(f'{m} ({type(e).__name__}: {e})'[:200])\nprint(json.dumps(bad))"
            % needed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else [out.stderr[-500:]]


# --- the steps ------------------------------------------------------------------------------------------------------
def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(Path(__file__).parent), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                TOKENIZERS_PARALLELISM="false")


def step(name: str, args: list[str], out: Path, timeout: int) -> dict:
    """Run one step (`gpu_check_child.py`) in its own process; its JSON result, or the error it ended with."""
    t0 = time.time()
    result_file = out / f"{name}.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "gpu_check_child.py"), str(result_file), *args],
                          env=child_env(), capture_output=True, text=True, timeout=timeout)
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    result.update(step=name, seconds=round(time.time() - t0, 1), rc=proc.returncode)
    if proc.returncode:
        result["error"] = (proc.stderr or proc.stdout)[-1500:]
    print(json.dumps(result), flush=True)
    return result


def run(smoke: bool, out: Path) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from scale import build_checkpoint  # the same Llama-3.2 shapes as the CPU benchmark

    engine, small, big = ("hf", "tiny", "tiny") if smoke else ("unsloth", "1b", "3b")
    t0 = time.time()
    tokenizer = TOKENIZER if TOKENIZER.is_dir() else None
    models = {s: build_checkpoint(s, out / f"llama-{s}", SIZES[s], tokenizer) for s in dict.fromkeys((small, big))}
    print(f"checkpoints built in {time.time() - t0:.0f} s", flush=True)
    data = out / "chat.jsonl"  # the sample chats, repeated so packing fills 2048-token sequences
    data.write_text((REPO / "edgetune/sample_data/pirate_chat.jsonl").read_text() * 8)
    common = ["--max-length", "1024", "--packing"]
    sft = ["--method", "sft", "--data", str(data), "--max-steps", "3" if smoke else "20", "--batch-size", "2", *common]
    results = [step(f"sft-{e}", ["train", str(models[small]), e, *sft, "--labels"], out, 900) for e in
               dict.fromkeys((engine, "hf"))]
    pairs, prompts = REPO / "edgetune/sample_data/pirate_pairs.jsonl", REPO / "edgetune/sample_data/pirate_prompts.jsonl"
    five = ["--max-steps", "2" if smoke else "5", "--batch-size", "2"]
    results.append(step(f"dpo-{engine}", ["train", str(models[small]), engine, "--method", "dpo", "--data", str(pairs),
                                          *five], out, 600))
    results.append(step(f"grpo-{engine}", ["train", str(models[small]), engine, "--method", "grpo", "--data",
                                           str(prompts), "--reward", "answer_match", "--num-generations", "2",
                                           *five], out, 600))
    cap = [] if smoke else ["--cap-gb", str(CARD_GB)]
    big_run = ["train", str(models[big]), engine, "--method", "sft", "--data", str(data), "--max-steps",
               "2" if smoke else "5", "--max-length", "2048", "--packing", "--profile", "gpu-8gb", *cap]
    results.append(step(f"sft-{big}-8gb", big_run, out, 900))
    run_dir = results[-1].get("run_dir")
    if run_dir:
        results.append(step(f"merge-{big}-8gb", ["merge", run_dir, *cap], out, 600))
        results.append(step(f"export-f16-{big}", ["export", run_dir], out, 600))
    summarize(results)
    print(f"gpu_check finished in {time.time() - t0:.0f} s")
    return 0 if all(r["rc"] == 0 for r in results) else 1


def run_planner(smoke: bool, out: Path) -> int:
    """`--planner`: the memory plan each run recorded against its measured peaks (benchmarks/plan_cuda.py prints the
    table): packed SFT at 512/1024/2048 tokens per engine, then DPO and GRPO under Unsloth (short rows, where the
    fixed part of the plan dominates)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from plan_cuda import main as plan_table
    from scale import build_checkpoint

    size, engines = ("tiny", ("hf",)) if smoke else ("1b", ("unsloth", "hf"))
    t0 = time.time()
    model = build_checkpoint(size, out / f"llama-{size}", SIZES[size], TOKENIZER if TOKENIZER.is_dir() else None)
    data = out / "chat.jsonl"
    data.write_text((REPO / "edgetune/sample_data/pirate_chat.jsonl").read_text() * 16)
    steps = "2" if smoke else "4"
    results = []
    for engine in engines:
        for length in (512, 1024, 2048):
            results.append(step(f"plan-{engine}-{length}", ["train", str(model), engine, "--method", "sft", "--data",
                                                            str(data), "--max-steps", steps, "--batch-size", "2",
                                                            "--max-length", str(length), "--packing"], out, 600))
    samples = REPO / "edgetune/sample_data"
    for method, extra in (("dpo", ["--data", str(samples / "pirate_pairs.jsonl")]),
                          ("grpo", ["--data", str(samples / "pirate_prompts.jsonl"), "--reward", "answer_match",
                                    "--num-generations", "2"])):
        results.append(step(f"{method}-{engines[0]}", ["train", str(model), engines[0], "--method", method, *extra,
                                                      "--max-steps", steps, "--batch-size", "2"], out, 600))
    log = out / "planner.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in results))
    print()
    if any(r.get("peak_allocated_gb") for r in results):
        plan_table([str(log), "--recorded"])
    else:
        print("no CUDA peaks measured (a CPU smoke run): the steps ran, no table")
    print(f"planner check finished in {time.time() - t0:.0f} s; {log} holds the steps (re-score them with this "
          "checkout's planner: python benchmarks/plan_cuda.py LOG)")
    return 0 if all(r["rc"] == 0 for r in results) else 1


def summarize(results: list[dict]) -> None:
    by = {r["step"]: r for r in results}
    print("\nstep                    rc   seconds  tokens/s  peak VRAM GB  plan GB  peak RSS GB  labels ok")
    for r in results:
        print(f"{r['step']:22} {r['rc']:3} {r['seconds']:9.0f} {r.get('tokens_per_s') or 0:9.0f} "
              f"{r.get('peak_vram_gb') or 0:13.2f} {r.get('plan_gb') or 0:8.2f} {r.get('peak_rss_gb') or 0:12.2f}  "
              f"{r.get('labels_ok', '-')}")
    u, h = by.get("sft-unsloth"), by.get("sft-hf")
    if u and h and u.get("tokens_per_s") and h.get("tokens_per_s"):
        print(f"Unsloth / HF 4-bit: tokens/s x{u['tokens_per_s'] / h['tokens_per_s']:.2f} (goal >= 1.5), peak VRAM "
              f"x{u['peak_vram_gb'] / h['peak_vram_gb']:.2f} (goal <= 0.8)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetch", action="store_true")
    ap.add_argument("--plan", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--planner", action="store_true", help="instead of the steps: plan vs measured peak for SFT at 512, "
                    "1024 and 2048 tokens per engine, DPO and GRPO (about 8 minutes on a GPU)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")) / "gpu_check")
    args = ap.parse_args()
    if args.fetch:
        fetch()
        return plan()
    if args.plan:
        return plan()
    if not args.smoke:
        install()
    missing = missing_modules(args.smoke)
    if missing:
        print("cannot run, missing here: " + "; ".join(missing) + "\n(carry them in .whl/: see CARRY in this file)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    return run_planner(args.smoke, args.out) if args.planner else run(args.smoke, args.out)


if __name__ == "__main__":
    sys.exit(main())
