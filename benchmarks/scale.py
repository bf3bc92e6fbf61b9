"""Memory and time per stage at real sizes: Llama-3.2-1B- and 3B-shaped checkpoints with random weights (bf16
safetensors, the embedded SmolLM2 tokenizer), each stage through the CLI as a user runs it:

    train (QLoRA: --4bit, a few steps) -> merge -> export --gguf q4_k_m (imatrix + verification) -> eval

Per stage it prints wall time, peak RSS (the kernel's high-water mark, /usr/bin/time -v) and the peak of anonymous
memory (sampled from /proc: what must fit in RAM; the rest of RSS is file pages that llama.cpp maps from the GGUF and
the kernel can drop), and for training the memory plan's estimate beside the measured peak.
With --baseline REV the merge and export stages also run with the code of git revision REV, in the same run.

    python benchmarks/scale.py [1b] [3b] [--steps 3] [--baseline 9cdcd76] [--code HEAD] [--keep DIR] [--no-eval]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # Llama 3.2 (meta-llama/Llama-3.2-1B / -3B config.json)
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24),
}
COMMON = dict(num_key_value_heads=8, head_dim=None, vocab_size=128256, max_position_embeddings=131072,
              rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
              rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192})


def build_checkpoint(size: str, out: Path, shape: dict | None = None, tokenizer_dir: Path | None = None) -> Path:
    """Random bf16 weights written tensor by tensor (no whole model in memory), the embedded tokenizer (or the copy
    of it in `tokenizer_dir`, where the embedded model is not installed). `shape` overrides SHAPES[size]."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    sys.path.insert(0, str(REPO))
    from edgetune.safetensors_io import ShardedWriter
    from edgetune.tokenizer import load_tokenizer

    if tokenizer_dir is None:
        from edgetune.models import resolve

        tokenizer_dir = resolve("default").path
    tok = load_tokenizer(tokenizer_dir)
    shape = {**(shape or SHAPES[size]), **COMMON}
    shape["head_dim"] = shape["hidden_size"] // shape["num_attention_heads"]
    config = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, dtype="bfloat16")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardedWriter(out, {n: ("BF16", s) for n, s in params.items()})
    gen = torch.Generator().manual_seed(0)
    for name, s in params.items():
        if name.endswith("norm.weight"):
            t = torch.ones(s)
        else:
            rows = s[0]
            for start in range(0, rows, 4096):
                part = torch.randn((min(rows, start + 4096) - start, *s[1:]), generator=gen) * 0.02
                writer.write(name, part.to(torch.bfloat16), row_offset=start)
            continue
        writer.write(name, t.to(torch.bfloat16))
    writer.close()
    config.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class Peak:
    """Samples RssAnon and RssFile of a process tree every 50 ms."""

    def __init__(self, pid: int):
        self.pid, self.anon, self.rss, self._stop = pid, 0, 0, threading.Event()
        self.at_peak = (0.0, 0, 0)  # (seconds in, anonymous, file pages) when the sampled RSS was highest
        self.t0 = time.time()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            anon = rss = 0
            for p in procs:
                try:
                    status = Path(f"/proc/{p.pid}/status").read_text()
                except OSError:
                    continue
                kb = dict(re.findall(r"^(RssAnon|VmRSS):\s+(\d+) kB", status, re.M))
                anon += int(kb.get("RssAnon", 0)) * 1024
                rss += int(kb.get("VmRSS", 0)) * 1024
            if rss > self.rss:
                self.at_peak = (time.time() - self.t0, anon, rss - anon)
            self.anon, self.rss = max(self.anon, anon), max(self.rss, rss)
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self.thread.join()


def stage(args: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run `edgetune ARGS` under /usr/bin/time -v; wall seconds, peak RSS (GB), peak anonymous memory, output.
    cwd must not be the repository: `python -m` puts the cwd first on sys.path, which would shadow --code."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "edgetune.cli", *map(str, args)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    peak = Peak(proc.pid)
    out, err = proc.communicate()
    peak.stop()
    if proc.returncode != 0:
        raise SystemExit(f"edgetune {' '.join(map(str, args))} failed:\n{out[-2000:]}\n{err[-4000:]}")
    hwm = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) * 1024
    when, anon, file = peak.at_peak
    return {"seconds": time.time() - t0, "peak_rss_gb": hwm / 1e9, "peak_anon_gb": peak.anon / 1e9,
            "at_peak": f"{when:.0f} s in: {anon / 1e9:.2f} GB anonymous + {file / 1e9:.2f} GB file pages",
            "out": " ".join((out + err).split())}


def baseline_env(rev: str, root: Path) -> dict:  # also --code: the code under test as committed
    """An environment whose `edgetune` is git revision REV (a worktree; its export/, tui/, profiles/ linked into
    the package as the installed layout has them)."""
    tree = root / f"code-{rev}"
    if tree.exists():
        return {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)
    for sub in ("export", "tui", "profiles"):
        (tree / "edgetune" / sub).symlink_to(tree / sub)
    return {**os.environ, "PYTHONPATH": str(tree)}


def run_size(size: str, root: Path, steps: int, baseline: str | None, env: dict | None = None,
             evaluate: bool = True) -> dict:
    t0 = time.time()
    model = build_checkpoint(size, root / f"llama-{size}")
    print(f"[{size}] checkpoint built in {time.time() - t0:.0f} s: {model}", flush=True)
    data = REPO / "edgetune" / "sample_data" / "pirate_chat.jsonl"
    run = root / f"run-{size}"
    rows = {}
    rows["train"] = stage(["train", "--model", model, "--data", data, "--max-steps", steps, "--run-dir", run,
                           "--name", f"scale-{size}", "--4bit"], env, root)
    plan = re.search(r"estimated peak RAM ([\d.]+) GB", rows["train"]["out"])  # GiB (edgetune.memory.GB)
    rows["train"]["plan_gb"] = float(plan.group(1)) * 1024**3 / 1e9 if plan else None
    print(f"[{size}] train done: {_row(rows['train'])}", flush=True)
    variants = [("", env)] + ([(f" @{baseline}", baseline_env(baseline, root))] if baseline else [])
    config_text = (run / "config.toml").read_text()
    for label, code_env in variants:  # not `env`: eval below runs the code under test
        (run / "config.toml").write_text(config_for(config_text, code_env) if label else config_text)
        for name, args in (("merge", ["merge", run]), ("export", ["export", run, "--gguf", "q4_k_m"])):
            if name == "merge":
                shutil.rmtree(run / "merged", ignore_errors=True)
                shutil.rmtree(run / "gguf", ignore_errors=True)
            rows[name + label] = stage(args, code_env, root)
            shutil.copy(run / "report.json", root / f"report-{size}-{name}{label.strip().replace('@', '')}.json")
            print(f"[{size}] {name}{label} done: {_row(rows[name + label])}", flush=True)
    (run / "config.toml").write_text(config_text)
    if not evaluate:
        return rows
    rows["eval"] = stage(["eval", run, "--data", REPO / "edgetune" / "sample_data" / "pirate_eval.jsonl",
                          "--max-tokens", "16"], env, root)
    return rows


def config_for(text: str, env: dict) -> str:
    """The run's config.toml without the keys an older revision's config does not define (it refuses unknown
    keys): the run was trained by the code under test."""
    old = (Path(env["PYTHONPATH"]) / "edgetune" / "config.py").read_text()
    keep = [line for line in text.splitlines()
            if not (m := re.match(r"(\w+) = ", line)) or re.search(rf"^    {m.group(1)}: ", old, re.M)]
    return "\n".join(keep) + "\n"


def _row(r: dict) -> str:
    plan = f", plan {r['plan_gb']:.1f} GB" if r.get("plan_gb") else ""
    return (f"{r['seconds']:.0f} s, peak RSS {r['peak_rss_gb']:.2f} GB, peak anon {r['peak_anon_gb']:.2f} GB{plan}; "
            f"sampled peak {r['at_peak']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", default=["1b"], choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--baseline", help="also run merge and export with this git revision's code")
    ap.add_argument("--code", help="measure this git revision's code instead of the working tree")
    ap.add_argument("--no-eval", action="store_true", help="stop after the export (eval is the slowest stage)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder, removed)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgetune-scale-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for size in args.sizes:
            env = baseline_env(args.code, root) if args.code else None
            results[size] = run_size(size, root, args.steps, args.baseline, env, not args.no_eval)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'size':4} {'stage':22} {'wall s':>8} {'peak RSS GB':>12} {'peak anon GB':>13} {'plan GB':>8}")
    for size, rows in results.items():
        for name, r in rows.items():
            plan = f"{r['plan_gb']:.1f}" if r.get("plan_gb") else ""
            print(f"{size:4} {name:22} {r['seconds']:8.0f} {r['peak_rss_gb']:12.2f} {r['peak_anon_gb']:13.2f} {plan:>8}")


if __name__ == "__main__":
    main()
