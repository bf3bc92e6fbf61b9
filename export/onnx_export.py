"""`edgetune export RUN_DIR --onnx fp32|fp16|int8|int4`: merge if needed, build an ONNX decoder with KV cache per
variant into RUN_DIR/onnx/<variant>/, verify each against the merged HF model, record the numbers in report.json.

Exporter: onnxruntime-genai's model builder (`onnxruntime_genai.models.builder`), chosen by measurement
(2026-11, this CPU, onnxruntime 1.31.1, onnxruntime-genai 0.18.0, onnx-ir 1.1.0):
- It reads the local HF folder with transformers 5.17 (no hub access) and writes a decoder with a KV cache in the
  inputs/outputs (GroupQueryAttention, a contrib op plain onnxruntime's CPU provider runs) plus genai_config.json.
- Fidelity: tiny llama fp32 max |logit diff| vs transformers 2.4e-7; SmolLM2-135M fp32 7.8e-5 with identical argmax;
  one-token-at-a-time decoding through the cache matches the full-sequence pass to 5e-5.
- Variants: int8 = the builder's MatMulNBits 8-bit weights with int8 dynamic activation quantization (accuracy_level
  4, the CPU default); for tied models its fp32 embedding table is replaced by the int8 lm_head blocks afterwards
  (onnx_int8.py: SmolLM2 270.5 -> 158.2 MB, same KLD). fp16 (274 MB). int4 = the recipe onnx_int4.DEFAULT_INT4:
  the fp32 graph quantized by GPTQ (onnx_gptq.py) into MatMulNBits' own layout (4-bit blocks of 32 with integer
  zero points; rounding errors compensated through each MatMul's input statistics on the run's calibration rows, the
  rows the GGUF importance matrix uses; lm_head int8 shared with the embedding; v_proj, the down_proj of llama.cpp's
  use_more_bits layers and the first and last up_proj in int8, onnx_mixed.py; gate/up fused into one MatMulNBits:
  onnx_fuse.py); onnx_int4.py has the measured table of every recipe
  tried (incl. HQQ, onnxruntime's GPTQ) against GGUF Q4_K_M and says why.
- fp16 is built for the "cuda" target: the builder's CPU fp16 graph (MultiHeadAttention + position_ids) fails in
  onnxruntime 1.31.1 on the first cached step ("Shape mismatch attempting to re-use buffer"), while the GQA fp16 graph
  runs on the CPU provider and matches (fp16 noise, max diff 0.09 on SmolLM2 logits).
- Rejected: optimum-onnx needs transformers<4.58 (conflicts with the stack) and loses rope_theta on configs saved by
  transformers 5 (DESIGN.md). torch.onnx (dynamo) works too (tiny llama, 3.7 s, max diff 2e-7) but needs the extra
  `onnxscript` package, our own KV-cache wrapper around transformers' DynamicCache internals, and a separate
  quantization pass; its graph is unfused (no GroupQueryAttention/SkipLayerNorm kernels). The builder covers the
  llama/mistral/qwen/gemma/phi families, quantization and fused CPU kernels in one offline call.
The builder runs in a subprocess (its own memory peak and console output stay out of ours); it ran to completion
inside `unshare -n` (no network at all).
Every variant is written into a temp folder beside its final path and renamed into place when complete.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgetune import runs
from edgetune.errors import ExportError
from edgetune.events import Note, StageFinished, StageStarted, null_sink

from . import onnx_int4
from .onnx_fuse import decode_layout
from .onnx_genai import make_genai_ready
from .onnx_int8 import share_int8_embedding
from .onnx_support import builder_input, onnx_support
from .onnx_verify import check_onnx_gate, dir_size, verify_variants
from .types import ONNX_VARIANTS, parse_choices

ONNX = "onnx"  # RUN_DIR/onnx/<variant>/
VARIANTS = ONNX_VARIANTS
# variant -> (builder precision, builder execution provider, extra options); the docstring says why fp16 says cuda.
# int4 is built by the recipe onnx_int4.DEFAULT_INT4 (its docstring has the measurements)
BUILDER_TARGET = {"fp32": ("fp32", "cpu", []), "fp16": ("fp16", "cuda", []), "int8": ("int8", "cpu", []),
                  "int4": ("int4", "cpu", [])}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "generation_config.json")


def normalise_variants(variants: list[str]) -> list[str]:
    return parse_choices(variants, VARIANTS, "ONNX variant", "--onnx fp32 --onnx int4 (repeatable)")


def check_builder() -> None:
    """Fail early, with the install line, when the exporter's packages are missing."""
    import importlib.util

    missing = [m for m in ("onnxruntime", "onnxruntime_genai", "onnx_ir", "onnx")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)} (not installed)",
                          hint='pip install onnxruntime==1.31.1 onnxruntime-genai==0.18.0 onnx==1.23.2 onnx-ir==1.1.0')


def build_variant(merged: Path, final_dir: Path, variant: str, sink=null_sink, extra: list[str] | None = None) -> Path:
    """Run the model builder for one variant into a temp folder, add the tokenizer files, rename into place.
    `extra` replaces the variant's builder options (benchmarks/onnx_int4.py tries recipes this way)."""
    precision, provider, default_extra = BUILDER_TARGET[variant]
    post = None  # an onnxruntime quantizer recipe applied to the builder's fp32 graph
    if variant == "int4" and extra is None:
        if onnx_int4.DEFAULT_INT4 in onnx_int4.ORT_RECIPES or onnx_int4.DEFAULT_INT4 in onnx_int4.IQ_RECIPES:
            precision, post = "fp32", onnx_int4.DEFAULT_INT4
        else:
            default_extra = onnx_int4.builder_recipe(onnx_int4.DEFAULT_INT4)[1]
    extra = default_extra if extra is None else extra
    tmp = runs.temp_dir_beside(final_dir)
    try:
        t0 = time.time()
        sink(StageStarted("onnx", f"{variant}: model builder ({precision}, {provider} graph) -> {final_dir}"))
        source = builder_input(merged, tmp / "input")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(tmp / "model"),
               "-p", precision, "-e", provider, "-c", str(tmp / "cache")]
        cmd += ["--extra_options", *extra] if extra else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_offline_env())
        model_dir = tmp / "model"
        if proc.returncode != 0 or not (model_dir / "model.onnx").is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise ExportError(f"the ONNX model builder failed for {variant} (exit {proc.returncode}):\n{tail}",
                              hint="check that merged/ holds a supported architecture (llama, mistral, qwen2/3, "
                                   "gemma, phi); --gguf still works for it")
        if provider != "cpu":
            cpu_session_options(model_dir / "genai_config.json")
        if post is not None:
            how = onnx_int4.ORT_RECIPES[post][0] if post in onnx_int4.ORT_RECIPES else \
                "GPTQ" if onnx_int4.IQ_RECIPES[post][0].startswith("gptq") else "importance-weighted"
            sink(Note(f"{variant}: {how} 4-bit quantization ({post})"))
            model_dir = onnx_int4.ort_quantize(model_dir, tmp / "quantized", post, calibration(merged), sink)
            if onnx_int4.IQ_RECIPES.get(post, ("",))[0] in ("offset", "gptq", "gptq_zp"):
                decode_layout(model_dir)  # the same weights, laid out for a faster one-token decode (onnx_fuse.py)
        elif variant == "int8":
            share_int8_embedding(model_dir)  # tied models: no fp32 copy of the embedding table
        for name in TOKENIZER_FILES:  # the merged model's own files: the builder rewrites tokenizer_config
            if (merged / name).is_file():
                shutil.copy2(merged / name, model_dir / name)
        make_genai_ready(model_dir)  # og.Model / og.Tokenizer / og.Generator run the folder unchanged
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        shutil.rmtree(tmp / "input", ignore_errors=True)
        runs.replace_dir(model_dir, final_dir)
        sink(StageFinished("onnx", time.time() - t0, f"{variant}: {dir_size(final_dir) / 1e6:.1f} MB"))
        return final_dir
    finally:  # success moved the model out; failure or Ctrl-C leaves nothing at the final path
        shutil.rmtree(tmp, ignore_errors=True)


def calibration(merged: Path) -> list[list[int]]:
    """Token ids of the run's calibration rows (the int4 importance; 32 rows as GGUF's importance matrix uses), when
    merged/ sits in a run dir that has them."""
    from edgetune.tokenizer import load_tokenizer

    texts = runs.read_texts(merged.parent, runs.CALIBRATION) or []
    if not texts:
        return []
    tokenizer = load_tokenizer(merged)
    return [list(tokenizer(t)["input_ids"][:256]) for t in texts[:32]]


def cpu_session_options(genai_config: Path) -> None:
    """A graph built for the cuda target still runs on CPU; make onnxruntime-genai default to CPU for it too."""
    import json

    if genai_config.is_file():
        data = json.loads(genai_config.read_text(encoding="utf-8"))
        data["model"]["decoder"].setdefault("session_options", {})["provider_options"] = []
        genai_config.write_text(json.dumps(data, indent=4), encoding="utf-8")


def _offline_env() -> dict:
    import os

    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env




def remove_stale_temps(folder: Path) -> None:
    """A killed export (SIGKILL) can leave `.VARIANT.*.tmp` folders; they are never at a final path."""
    for tmp in folder.glob(".*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def export_onnx(run_dir: Path, variants: list[str], sink=null_sink, verify: bool = True) -> list[dict]:
    """Export RUN_DIR's merged model to each ONNX variant in RUN_DIR/onnx/<variant>/, verified; returns one result
    per variant (path, size, and with `verify` top-1/KLD/stop-at-EOS). fp32 must match the HF model (ExportError)."""
    from edgetune.merge import merge
    from edgetune.runs import update_report

    t0 = time.time()
    wanted = normalise_variants(variants)
    check_builder()
    run_dir = runs.require_run_dir(run_dir)
    merged = run_dir / runs.MERGED
    refuse_unsupported(run_dir)
    if not (merged / "config.json").is_file():
        sink(Note("no merged model yet: merging first"))
        merge(run_dir, sink)
    out_root = run_dir / ONNX
    out_root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_root)
    sink(Note(f"plan: {merged.name}/ -> ONNX {', '.join(wanted)} in {out_root}/ (KV cache; int4 = 4-bit "
              f"MatMulNBits by recipe {onnx_int4.DEFAULT_INT4}: GPTQ on the run's calibration rows, "
              "lm_head and sensitive layers int8; int8 = 8-bit weights + dynamic int8 activations)"
              + ("; verified against the merged model, fp32 mean KL divergence <= 1e-4 required" if verify else "")))
    dirs = {v: build_variant(merged, out_root / v, v, sink) for v in wanted}
    results = [{"type": v, "path": str(d), "size_bytes": dir_size(d)} for v, d in dirs.items()]
    if verify:
        results = verify_variants(run_dir, dirs, sink)
    update_report(run_dir, ONNX, {"variants": merged_with_earlier(run_dir, results), "exporter": exporter_versions()})
    if verify:
        for r in results:
            check_onnx_gate(r)  # after the report is written, so the numbers are there to read
    sink(Note(f"ONNX export done in {time.time() - t0:.0f} s"))
    return results


def refuse_unsupported(run_dir: Path) -> None:
    """Before merging or building anything: the base model's architecture must be one the builder exports."""
    import json

    merged = run_dir / runs.MERGED / "config.json"
    if merged.is_file():
        config = json.loads(merged.read_text(encoding="utf-8"))
    else:
        from edgetune import models, preflight
        from edgetune.runs import load_run_config

        cfg = load_run_config(run_dir)
        resolved = models.resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code)
        config = preflight.model_config(resolved.path, resolved.revision, cfg.model.trust_remote_code)
    if (reason := onnx_support(config)) is not None:
        raise ExportError(f"{run_dir}: {reason}", hint="export GGUF instead: edgetune export RUN_DIR --gguf q4_k_m")


def merged_with_earlier(run_dir: Path, results: list[dict]) -> list[dict]:
    """This export's results plus earlier ones for variants not rebuilt now (and still on disk), in VARIANTS order."""
    import json

    path = Path(run_dir) / runs.REPORT
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get(ONNX, {}).get("variants", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    by_type = {r["type"]: r for r in earlier if isinstance(r, dict) and Path(r.get("path", "")).is_dir()}
    by_type.update({r["type"]: r for r in results})
    return [by_type[v] for v in VARIANTS if v in by_type]


def exporter_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "onnxruntime-genai", "onnx", "onnx-ir"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def summary_line(r: dict) -> str:
    if "top1" not in r:
        return f"{r['type']:5} {r['size_bytes'] / 1e6:7.1f} MB  (not verified)"
    return (f"{r['type']:5} {r['size_bytes'] / 1e6:7.1f} MB  top-1 {r['top1']:.3f}  KLD {r['mean_kld']:.4f}  "
            f"stops at EOS {'yes' if r['stops_at_eos'] else 'NO'}  {'ok' if r['passed'] else 'FAILED'}")
