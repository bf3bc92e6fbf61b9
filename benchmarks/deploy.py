"""Deployment targets side by side: ONNX (onnxruntime) fp32/int8/int4 (+ each int4 recipe) next to GGUF q8_0/q4_k_m.

    python benchmarks/deploy.py RUN_DIR [--recipes q41_32_v8,q41_32_v8+decode,...] [--repeats 3] [--prompt-tokens 128]
                                        [--decode-tokens 64] [--onnx-decode shared,run,genai] [--max-other 0.1]
                                        [--speed-only] [--json out.json]

Exports whatever is missing first (not timed; ONNX without verification, GGUF without verification; int4 recipes of
export/onnx_int4.py into RUN_DIR/onnx-recipes/<recipe>/, and <recipe>+decode/ with export/onnx_fuse.py's decode
layout as `edgetune export` writes the default). Quality, once per model, with the project's verification
(export/verify.py compare_logits against the merged model in fp32 transformers, on the run's held-out texts plus the
generic texts): top-1 agreement, mean KL divergence, and held-out loss (mean next-token NLL of those texts under the
model; the merged model's own loss is printed beside). Then speed: for
each model, `repeats` times: load (wall time of building the session / llama context), a first (cold) prompt pass
of `prompt-tokens` ids (llama.cpp mmaps its file, so that pass also pages the weights in), a second prompt pass
(prompt tokens/s), then `decode-tokens` greedy steps through the KV cache (decode tokens/s).
Same ids, same thread count for every engine; llama.cpp keeps its default f16 KV cache (as deployed). Prints
medians and writes them as JSON with --json. Timings on a shared 2-core machine are noisy: compare within one run.
ONNX decode methods (--onnx-decode, each a row per model): `shared` is edgetune's loop (OnnxModel.generate: the KV
cache in place through IO binding, export/onnx_runtime.py SharedCache), `run` the earlier session.run per token
with the cache as numpy arrays (onnxruntime copies it into new present tensors every step), `genai`
onnxruntime-genai's og.Generator on the same folder (greedy; its own past/present buffer sharing).
Every sample records the CPU that other processes used while it ran (`other cpu` column, in cores, from
/proc/stat less this process's own time); --max-other 0.1 waits for quiet moments and takes a sample again (for up to
--max-wait seconds in all) when other jobs used more, so a shared machine's numbers come from its idle moments.
The repeats are interleaved (every target once per round), so each row also gets its decode speed over GGUF
Q4_K_M's in the same round: the median and range of those paired ratios (`decode/Q4_K_M`), drift cancelled.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ONNX_VARIANTS = ("fp32", "int8", "int4")
GGUF_TYPES = ("q8_0", "q4_k_m")
TEXT = ("The quick brown fox jumps over the lazy dog. Water boils at 100 degrees Celsius at sea level, and the "
        "capital of France is Paris. def add(a, b): return a + b. ")


def prompt_ids(run_dir: Path, n: int) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run_dir / "merged")
    ids = tok(TEXT * (n // 8 + 1), add_special_tokens=False)["input_ids"]
    return list(ids[:n])


def ensure_exports(run_dir: Path, onnx: list[str], gguf: list[str]) -> tuple[dict, dict]:
    from edgetune import runs
    from edgetune.export.gguf_export import export_gguf, file_name
    from edgetune.export.onnx_export import ONNX, export_onnx
    from edgetune.runs import load_run_config

    cfg = load_run_config(run_dir)
    name = runs.slug(cfg.name or run_dir.name)
    onnx_dirs = {v: run_dir / ONNX / v for v in onnx}
    missing = [v for v, d in onnx_dirs.items() if not (d / "model.onnx").is_file()]
    if missing:
        print(f"exporting ONNX {', '.join(missing)} ...", file=sys.stderr)
        export_onnx(run_dir, missing, verify=False)
    gguf_files = {q: run_dir / runs.GGUF / file_name(name, q) for q in gguf}
    missing = [q for q, f in gguf_files.items() if not f.is_file()]
    if missing:
        print(f"exporting GGUF {', '.join(missing)} ...", file=sys.stderr)
        export_gguf(run_dir, missing, imatrix=False, verify=False)
    return onnx_dirs, gguf_files


def quality(logits_fn, ref, texts) -> dict:
    """compare_logits (top-1, mean KLD) and the mean next-token NLL of `texts` from the same logits."""
    import numpy as np

    from edgetune.export.verify import _log_softmax, compare_logits

    nll = [0.0, 0]

    def recording(ids):
        logits = np.asarray(logits_fn(ids), dtype=np.float64)
        lp = _log_softmax(logits[:-1])
        nll[0] -= float(lp[np.arange(len(ids) - 1), ids[1:]].sum())
        nll[1] += len(ids) - 1
        return logits

    a = compare_logits(recording, ref, texts, 0.0)
    return {"top1": round(a.top1, 3), "mean_kld": round(a.mean_kld, 4), "heldout_loss": round(nll[0] / max(nll[1], 1), 4)}


def reference_loss(ref, texts) -> float:
    import numpy as np

    total, n = 0.0, 0
    for text in texts:
        ids, lp = ref.logprobs(text)
        total -= float(lp[np.arange(len(ids) - 1), ids[1:]].sum())
        n += len(ids) - 1
    return round(total / max(n, 1), 4)


def measure_quality(run_dir: Path, targets: list) -> tuple[dict, float]:
    from edgetune.export.onnx_runtime import OnnxModel
    from edgetune.export.verify import HFReference, _llama_logits, _load, heldout_texts

    ref = HFReference(run_dir / "merged")
    texts = heldout_texts(run_dir, ref.tokenizer)
    ref.prepare(texts)
    out, by_path = {}, {}
    for label, engine, path, _fn in targets:
        if path in by_path:  # another decode method of the same model: the same logits
            out[label] = by_path[path]
            continue
        if engine.startswith("onnxruntime"):
            out[label] = quality(OnnxModel(path).logits, ref, texts)
        else:
            llm = _load(path, n_ctx=max(len(ref.ids(t)) for t in texts) + 16)
            try:
                out[label] = quality(_llama_logits(llm), ref, texts)
            finally:
                llm.close()
        by_path[path] = out[label]
        print(f"{label}: {out[label]}", file=sys.stderr, flush=True)
    return out, reference_loss(ref, texts)


DECODE_METHODS = ("shared", "run", "genai")


def time_onnx(folder: Path, ids: list[int], n_decode: int, threads: int, method: str = "shared") -> dict:
    """Load, cold prompt, prompt, then n_decode greedy steps with one of DECODE_METHODS."""
    if method == "genai":
        return time_genai(folder, ids, n_decode, threads)
    from edgetune.export.onnx_runtime import OnnxModel

    t0 = time.perf_counter()
    model = OnnxModel(folder, threads=threads)
    t_loaded = time.perf_counter()
    model.forward(ids, model.empty_cache())  # cold: first run of the session
    t1 = time.perf_counter()
    cache = model.cache(len(ids) + n_decode) if method == "shared" else None
    if method == "shared" and cache is None:
        raise SystemExit(f"{folder}: genai_config.json does not allow a shared past/present buffer")
    step = cache.step if cache is not None else None
    if step is None:
        logits, past = model.forward(ids, model.empty_cache())
    else:
        logits = step(ids)
    t2 = time.perf_counter()
    token = int(logits[-1].argmax())
    for _ in range(n_decode):
        if step is None:
            logits, past = model.forward([token], past)
        else:
            logits = step([token])
        token = int(logits[-1].argmax())
    t3 = time.perf_counter()
    return {"load_s": t_loaded - t0, "first_prompt_s": t1 - t_loaded, "prompt_tps": len(ids) / (t2 - t1),
            "decode_tps": n_decode / (t3 - t2)}


def time_genai(folder: Path, ids: list[int], n_decode: int, threads: int) -> dict:
    """og.Generator, greedy, with the folder's genai_config (its past/present buffer sharing) at `threads`."""
    import onnxruntime_genai as og

    t0 = time.perf_counter()
    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    t_loaded = time.perf_counter()
    times = []
    for _ in range(2):  # the first (cold) prompt pass, then the timed one
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + n_decode + 1, repetition_penalty=1.0)
        generator = og.Generator(model, params)
        t1 = time.perf_counter()
        generator.append_tokens(list(ids))
        generator.generate_next_token()  # the first new token, from the prompt's logits
        times.append(time.perf_counter() - t1)
    t2 = time.perf_counter()
    for _ in range(n_decode):
        generator.generate_next_token()
    t3 = time.perf_counter()
    return {"load_s": t_loaded - t0, "first_prompt_s": times[0], "prompt_tps": len(ids) / times[1],
            "decode_tps": n_decode / (t3 - t2)}


def time_gguf(path: Path, ids: list[int], n_decode: int, threads: int) -> dict:
    import llama_cpp
    import numpy as np

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(str(path), n_ctx=len(ids) + n_decode + 16, n_threads=threads, n_batch=max(512, len(ids)),
                          verbose=False)
    t_loaded = time.perf_counter()
    try:
        llm.eval(ids)  # cold: llama.cpp mmaps the file, so the first pass also pages the weights in
        t1 = time.perf_counter()
        first_prompt_s = t1 - t_loaded
        llm.reset()
        llm.eval(ids)
        t2 = time.perf_counter()
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        for _ in range(n_decode):
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t3 = time.perf_counter()
    finally:
        llm.close()
    return {"load_s": t_loaded - t0, "first_prompt_s": first_prompt_s, "prompt_tps": len(ids) / (t2 - t1),
            "decode_tps": n_decode / (t3 - t2)}


def onnx_label(variant: str, method: str, methods: list[str]) -> str:
    return f"onnx {variant}" + (f" [{method}]" if len(methods) > 1 else "")


def recipe_dirs(run_dir: Path, recipes: str) -> dict:
    """int4 recipes built (once) into RUN_DIR/onnx-recipes/<recipe>/, by benchmarks/onnx_int4.py's builder; a name
    ending in +decode is that recipe after export/onnx_fuse.py's decode_layout (what `edgetune export` writes for
    the default), kept beside it as <recipe>+decode/."""
    if not recipes:
        return {}
    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_int4 import build_recipe

    from edgetune.export import onnx_int4

    names = onnx_int4.RECIPES if recipes == "all" else [r for r in recipes.split(",") if r]
    out = {}
    for name in names:
        base = name.removesuffix("+decode")
        folder = build_recipe(run_dir, base, None)[0]
        out[f"int4 {name}"] = decode_copy(folder) if name != base else folder
    return out


def decode_copy(folder: Path) -> Path:
    """folder + decode_layout, built once beside it as <name>+decode/ (through a temp folder)."""
    import shutil

    from edgetune.export.onnx_fuse import decode_layout

    final = folder.with_name(f"{folder.name}+decode")
    if not (final / "model.onnx").is_file():
        tmp = folder.with_name(f".{folder.name}+decode.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        print(f"{final.name}: {decode_layout(tmp)}", file=sys.stderr)
        tmp.rename(final)
    return final


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("model.onnx*")) if path.is_dir() else path.stat().st_size


def median_row(label: str, engine: str, path: Path, runs_: list[dict]) -> dict:
    row = {"model": label, "engine": engine, "size_mb": round(size_of(path) / 1e6, 1), "repeats": len(runs_)}
    for key, digits in (("load_s", 3), ("first_prompt_s", 3), ("prompt_tps", 1), ("decode_tps", 1), ("other_cpu", 2)):
        row[key] = round(statistics.median(r[key] for r in runs_), digits)
    row["decode_tps_samples"] = [round(r["decode_tps"], 1) for r in runs_]  # the spread, in the JSON
    return row


def paired_ratios(rows: list[dict], samples: dict[str, list[dict]], against: str = "gguf q4_k_m") -> None:
    """Each row's decode speed over `against`'s, per repeat (the two were timed back to back in that round, so
    the machine's drift cancels), as the median and the range of those ratios."""
    if against not in samples:
        return
    for r in rows:
        ratios = sorted(a["decode_tps"] / b["decode_tps"] for a, b in zip(samples[r["model"]], samples[against]))
        r["decode_vs_gguf"] = round(statistics.median(ratios), 3)
        r["decode_vs_gguf_range"] = [round(ratios[0], 3), round(ratios[-1], 3)]


def _busy_s() -> float:
    """CPU seconds all processes have spent busy (Linux /proc/stat; 0 elsewhere)."""
    import os

    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def sampled(fn, *args, max_other: float | None = None, deadline: float = 0.0) -> dict:
    """fn(*args) with `other_cpu`: cores other processes kept busy meanwhile. With max_other, each try first waits
    for 3 quiet seconds and a sample over max_other is taken again, until the deadline (time.time())."""
    import resource

    def own_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    while True:
        while max_other is not None and time.time() < deadline:
            busy0 = _busy_s()
            time.sleep(3)
            if (_busy_s() - busy0) / 3 <= max_other:
                break
        own0, busy0, t0 = own_s(), _busy_s(), time.perf_counter()
        out = fn(*args)
        own1, busy1, t1 = own_s(), _busy_s(), time.perf_counter()
        out["other_cpu"] = max(0.0, (busy1 - busy0 - (own1 - own0)) / (t1 - t0))
        if max_other is None or out["other_cpu"] <= max_other or time.time() > deadline:
            return out
        gc.collect()


def main(argv: list[str] | None = None) -> list[dict]:
    from edgetune.export.quantize import _usable_cpus

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--onnx", default=",".join(ONNX_VARIANTS))
    p.add_argument("--gguf", default=",".join(GGUF_TYPES))
    p.add_argument("--recipes", default="", help="int4 recipes of export/onnx_int4.py to add (comma-separated, "
                                                 "or 'all'); RECIPE+decode: with export/onnx_fuse.py's layout")
    p.add_argument("--onnx-decode", default="shared", help="ONNX decode methods, one row each (comma-separated): "
                   + ", ".join(DECODE_METHODS) + " (shared is what edgetune's chat runs)")
    p.add_argument("--max-other", type=float, default=None, help="take a sample again while other processes used "
                   "more than this many cores during it (a shared machine)")
    p.add_argument("--max-wait", type=float, default=1800, help="seconds --max-other may wait in all")
    p.add_argument("--speed-only", action="store_true", help="skip the quality columns (no transformers reference)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    methods = [m for m in args.onnx_decode.split(",") if m]
    if not methods or set(methods) - set(DECODE_METHODS):
        p.error(f"--onnx-decode: choose from {', '.join(DECODE_METHODS)}")
    onnx_dirs, gguf_files = ensure_exports(args.run_dir, [v for v in args.onnx.split(",") if v],
                                           [q for q in args.gguf.split(",") if q])
    onnx_dirs.update(recipe_dirs(args.run_dir, args.recipes))
    ids = prompt_ids(args.run_dir, args.prompt_tokens)
    threads = _usable_cpus()
    targets = [(onnx_label(v, m, methods), "onnxruntime" if m != "genai" else "onnxruntime-genai", d,
                functools.partial(time_onnx, method=m)) for v, d in onnx_dirs.items() for m in methods]
    targets += [(f"gguf {q}", "llama.cpp", f, time_gguf) for q, f in gguf_files.items()]
    samples: dict[str, list[dict]] = {t[0]: [] for t in targets}
    deadline = time.time() + args.max_wait
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every target alike
        for label, _engine, path, fn in targets:
            samples[label].append(sampled(fn, path, ids, args.decode_tokens, threads, max_other=args.max_other,
                                          deadline=deadline))
            gc.collect()
    rows = [median_row(label, engine, path, samples[label]) for label, engine, path, _ in targets]
    paired_ratios(rows, samples)
    nan = float("nan")
    scores, merged_loss = ({}, nan) if args.speed_only else measure_quality(args.run_dir, targets)
    for r in rows:
        r.update(scores.get(r["model"], {"top1": nan, "mean_kld": nan, "heldout_loss": nan}))
    print(f"\n{len(ids)} prompt tokens, {args.decode_tokens} decode tokens, {threads} threads, "
          f"median of {args.repeats}; quality against the merged model (its held-out loss {merged_loss:.4f})")
    print(f"{'model':32} {'size MB':>8} {'top-1':>6} {'mean KLD':>9} {'loss':>7} {'load s':>7} {'1st prompt s':>13} "
          f"{'prompt tok/s':>13} {'decode tok/s':>13} {'other cpu':>9} {'decode/Q4_K_M (range)':>22}")
    for r in rows:
        print(f"{r['model']:32} {r['size_mb']:8.1f} {r['top1']:6.3f} {r['mean_kld']:9.4f} {r['heldout_loss']:7.4f} "
              f"{r['load_s']:7.3f} {r['first_prompt_s']:13.3f} {r['prompt_tps']:13.1f} {r['decode_tps']:13.1f} "
              f"{r['other_cpu']:9.2f} {_ratio_text(r):>22}")
    if args.json:
        args.json.write_text(json.dumps({"prompt_tokens": len(ids), "decode_tokens": args.decode_tokens,
                                         "threads": threads, "repeats": args.repeats, "merged_heldout_loss": merged_loss,
                                         "rows": rows}, indent=2))
    return rows


def _ratio_text(row: dict) -> str:
    if "decode_vs_gguf" not in row:
        return ""
    lo, hi = row["decode_vs_gguf_range"]
    return f"{row['decode_vs_gguf']:.3f} ({lo:.2f}-{hi:.2f})"


if __name__ == "__main__":
    main()
