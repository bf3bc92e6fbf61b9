"""int4 ONNX recipes against GGUF Q4_K_M on one run, with the project's own verification (export/verify.py).

    python benchmarks/onnx_int4.py RUN_DIR [--recipes kq_mixed32,hqq32,...] [--gguf q4_k_m,q8_0] [--json out.json]

Every recipe of export/onnx_int4.py is built from RUN_DIR/merged into RUN_DIR/onnx-recipes/<recipe>/ (kept, so a
rerun only measures), then compared with the merged model in fp32 transformers on the run's held-out texts plus the
generic texts (compare_logits: mean KL(HF || file) per position, worst position, strict top-1). The GGUF files come
from RUN_DIR/gguf (exported first when missing, with the run's importance matrix as `edgetune export` does).
Sizes are the whole folder / file on disk. Prints one row per recipe as it finishes, then the table sorted by KLD.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def calibration_rows(run_dir: Path, tokenizer, n: int = 16, max_tokens: int = 256) -> list[list[int]]:
    from edgetune import runs

    texts = runs.read_texts(run_dir, runs.CALIBRATION) or []
    return [list(tokenizer(t)["input_ids"][:max_tokens]) for t in texts[:n]]


def build_recipe(run_dir: Path, recipe: str, ref) -> tuple[Path, float]:
    from edgetune.export import onnx_int4
    from edgetune.export.onnx_export import build_variant

    out = run_dir / "onnx-recipes" / recipe
    if (out / "model.onnx").is_file():
        return out, 0.0
    t0 = time.time()
    if recipe in onnx_int4.BUILDER_RECIPES or recipe in onnx_int4.INT8_RECIPES:
        precision, extra = onnx_int4.builder_recipe(recipe)
        build_variant(run_dir / "merged", out, precision, extra=extra)
    else:
        fp32 = run_dir / "onnx" / "fp32"
        if not (fp32 / "model.onnx").is_file():
            build_variant(run_dir / "merged", fp32, "fp32")
        tmp = out.with_name(f".{recipe}.tmp")
        if ref is None:
            from edgetune.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(run_dir / "merged")
        else:
            tokenizer = ref.tokenizer
        # GPTQ as measured with 16 rows; the importance-weighted recipes use the 32 rows GGUF's imatrix uses
        rows = calibration_rows(run_dir, tokenizer, n=32 if recipe in onnx_int4.IQ_RECIPES else 16)
        onnx_int4.ort_quantize(fp32, tmp, recipe, rows)
        tmp.rename(out)
    return out, time.time() - t0


def gguf_file(run_dir: Path, qtype: str) -> Path:
    from edgetune import runs
    from edgetune.export.gguf_export import export_gguf

    found = sorted((run_dir / runs.GGUF).glob(f"*{qtype.upper()}*.gguf")) + sorted(
        (run_dir / runs.GGUF).glob(f"*{qtype.lower()}*.gguf"))
    if not found:
        export_gguf(run_dir, [qtype], verify=False)
        return gguf_file(run_dir, qtype)
    return found[0]


def measure(label: str, logits_fn, size: int, ref, texts, build_s: float) -> dict:
    from edgetune.export.verify import compare_logits

    t0 = time.time()
    a = compare_logits(logits_fn, ref, texts, 0.0)
    row = {"variant": label, "size_mb": round(size / 1e6, 1), "top1": round(a.top1, 3), "mean_kld": round(a.mean_kld, 4),
           "max_kld": round(a.max_kld, 2), "positions": a.positions, "build_s": round(build_s, 1),
           "verify_s": round(time.time() - t0, 1)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    from edgetune.export import onnx_int4
    from edgetune.export.onnx_runtime import OnnxModel
    from edgetune.export.onnx_verify import dir_size
    from edgetune.export.verify import HFReference, _llama_logits, _load, heldout_texts

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--recipes", default=",".join(onnx_int4.RECIPES))
    p.add_argument("--gguf", default="q4_k_m")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    run_dir = args.run_dir
    ref = HFReference(run_dir / "merged")
    texts = heldout_texts(run_dir, ref.tokenizer)
    ref.prepare(texts)
    rows = []
    for qtype in [q for q in args.gguf.split(",") if q]:
        path = gguf_file(run_dir, qtype)
        llm = _load(path, n_ctx=max(len(ref.ids(t)) for t in texts) + 16)
        try:
            rows.append(measure(f"gguf {qtype}", _llama_logits(llm), path.stat().st_size, ref, texts, 0.0))
        finally:
            llm.close()
    for recipe in [r for r in args.recipes.split(",") if r]:
        try:
            folder, build_s = build_recipe(run_dir, recipe, ref)
            rows.append(measure(f"onnx {recipe}", OnnxModel(folder).logits, dir_size(folder), ref, texts, build_s))
        except Exception as e:  # noqa: BLE001 - one failing recipe is a result, not the end of the table
            print(json.dumps({"variant": f"onnx {recipe}", "error": str(e)[-300:]}), flush=True)
    print(f"\n{rows[0]['positions'] if rows else 0} positions; KLD = mean KL(HF fp32 || variant) per position, nats")
    print(f"{'variant':26} {'size MB':>8} {'top-1':>6} {'mean KLD':>9} {'worst':>6} {'build s':>8}")
    for r in sorted(rows, key=lambda r: r["mean_kld"]):
        print(f"{r['variant']:26} {r['size_mb']:8.1f} {r['top1']:6.3f} {r['mean_kld']:9.4f} {r['max_kld']:6.2f} "
              f"{r['build_s']:8.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
