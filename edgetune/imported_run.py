"""Runs trained elsewhere come back home: a merged Hugging Face folder, or a base model plus a plain PEFT LoRA
adapter folder (written by any tool), become an edgetune run directory, so `export`, `eval` and `chat` merge, export
and verify them exactly as they do a run edgetune trained.

The run directory follows edgetune.runs' contract: config.toml (model.ref = the base, 16-bit: an adapter trained
elsewhere is merged into the 16-bit base), adapter/ (the adapter's files plus a tokenizer) or merged/ (the folder's
files, hard-linked where the filesystem allows, else copied), and runs.IMPORTED saying where they came from. Importing
the same sources into the same directory again reuses it, so a later `eval` or `chat` finds the export.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from edgetune import runs
from edgetune.errors import ModelError, RunDirError
from edgetune.events import Note, null_sink

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def check_adapter_dir(adapter: Path) -> dict:
    """The adapter's config, after checking the folder holds a LoRA adapter edgetune can merge."""
    if not adapter.is_dir():
        raise ModelError(f"{adapter}: no such adapter folder", hint="pass --adapter a folder written by PEFT's save_pretrained")
    missing = [f for f in ADAPTER_FILES if not (adapter / f).is_file()]
    if missing:
        pickled = (adapter / "adapter_model.bin").is_file()
        raise ModelError(f"{adapter}: missing {', '.join(missing)}" + (" (found adapter_model.bin)" if pickled else ""),
                         hint="save the adapter with PEFT's save_pretrained(dir, safe_serialization=True); edgetune "
                              "reads safetensors only (pickle files can run code)")
    from edgetune.merge_stream import read_adapter

    read_adapter(adapter)  # refuses now, not after a merge, what the streamed merge cannot handle
    return json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))


def sources_of(model: str, adapter: Path | None) -> dict:
    """What the run was made from: paths plus sizes and times, so a changed source is not mistaken for the same."""
    def stamp(folder: Path) -> dict:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        return {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in files}

    out = {"model": model, "adapter": str(adapter.resolve()) if adapter else None}
    if Path(model).is_dir():
        out["model"] = str(Path(model).resolve())
        out["model_files"] = stamp(Path(model))
    if adapter:
        out["adapter_files"] = stamp(adapter)
    return out


def default_dir(name: str) -> Path:
    return runs.default_run_dir(runs.slug(f"{name}-imported"))


def import_run(model: str, adapter: str | Path | None = None, run_dir: Path | None = None, sink=null_sink) -> Path:
    """An edgetune run directory for MODEL (+ ADAPTER): created, or reused when it was made from the same sources."""
    from edgetune import models

    adapter = Path(adapter).expanduser() if adapter else None
    adapter_cfg = check_adapter_dir(adapter) if adapter else None
    resolved = models.resolve(model, sink=sink)
    if adapter is None and resolved.kind not in ("local",):
        raise ModelError(f"{model}: a model without --adapter must be a merged Hugging Face folder",
                         hint="pass the folder holding config.json + *.safetensors, or add --adapter ADAPTER_DIR")
    if adapter_cfg and adapter_cfg.get("base_model_name_or_path"):
        said = Path(str(adapter_cfg["base_model_name_or_path"])).name
        if said and said != resolved.name and said != Path(resolved.path).name:
            sink(Note(f"the adapter says it was trained on {adapter_cfg['base_model_name_or_path']!r}, merging it "
                      f"into {model!r}: the merge check will show a mismatch as large logit differences", "warning"))
    run_dir = Path(run_dir) if run_dir else default_dir(resolved.name)
    sources = sources_of(model, adapter)
    marker = run_dir / runs.IMPORTED
    if marker.is_file():
        if json.loads(marker.read_text(encoding="utf-8")).get("sources") == sources:
            sink(Note(f"{run_dir}: imported earlier from the same files; reusing it"))
            return run_dir
        raise RunDirError(f"{run_dir}: imported earlier from other files (or they changed since)",
                          hint="pick a new --run-dir, or delete that directory to import again")
    if (run_dir / runs.CONFIG).exists():
        raise RunDirError(f"{run_dir}: already an edgetune run (not an imported one)", hint="pick a new --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    if adapter:
        _write_adapter(adapter, resolved, run_dir / runs.ADAPTER)
    else:
        _link_folder(Path(resolved.path), run_dir / runs.MERGED)
    cfg = _run_config(model, resolved, run_dir, adapter_cfg)
    cfg.save(run_dir / runs.CONFIG)
    record = {"sources": sources, "kind": "adapter" if adapter else "merged", "imported_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    runs.atomic_write_text(marker, json.dumps(record, indent=2))
    runs.update_report(run_dir, "imported", record)
    sink(Note(f"imported {'base + adapter' if adapter else 'merged model'} into run directory {run_dir}"))
    return run_dir


def _run_config(model: str, resolved, run_dir: Path, adapter_cfg: dict | None):
    """A config that says what is known: the base, 16-bit, the adapter's rank and alpha; no data (none came along)."""
    from edgetune.config import RunConfig

    cfg = RunConfig(name=runs.slug(run_dir.name), run_dir=str(run_dir))
    cfg.model.ref = str(Path(resolved.path)) if resolved.kind == "local" else model
    cfg.model.load_in_4bit = False  # merge into the 16-bit base (never into 4-bit weights)
    if adapter_cfg:
        cfg.lora.r = int(adapter_cfg.get("r", cfg.lora.r))
        cfg.lora.alpha = int(adapter_cfg.get("lora_alpha", cfg.lora.alpha))
        cfg.lora.use_rslora = bool(adapter_cfg.get("use_rslora", False))
        targets = adapter_cfg.get("target_modules")
        if isinstance(targets, list) and targets:
            cfg.lora.target_modules = sorted(targets)
    return cfg


def _write_adapter(adapter: Path, resolved, final: Path) -> None:
    """adapter/ = the adapter's own files plus a tokenizer with a chat template (the adapter's, else the base's)."""
    from edgetune.data import install_chat_template
    from edgetune.tokenizer import load_tokenizer

    has_tokenizer = (adapter / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(adapter) if has_tokenizer else resolved.path, revision=resolved.revision)
    install_chat_template(tokenizer)  # a DataError naming the fix when there is none to render prompts with
    tmp = runs.temp_dir_beside(final)
    try:
        for f in ADAPTER_FILES:
            shutil.copy2(adapter / f, tmp / f)
        tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    runs.replace_dir(tmp, final)


def _link_folder(src: Path, final: Path) -> None:
    """merged/ = the folder's files, hard-linked (no second copy on disk) or copied across filesystems."""
    tmp = runs.temp_dir_beside(final)
    try:
        for p in src.iterdir():
            if p.is_file():
                try:
                    os.link(p, tmp / p.name)
                except OSError:
                    shutil.copy2(p, tmp / p.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    runs.replace_dir(tmp, final)
