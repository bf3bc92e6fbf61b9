"""Detect what the machine offers: CUDA GPU and VRAM, or CPU cores and RAM; free disk. Picks a profile."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

GB = 1024**3
GPU_PROFILES = (6, 8, 12, 16, 24)  # profiles/gpu-<N>gb.toml


@dataclass
class Hardware:
    device: str  # cuda | cpu
    gpu_name: str = ""
    vram_gb: float = 0.0
    bf16: bool = False
    cpu_cores: int = 1
    ram_gb: float = 0.0
    disk_free_gb: float = 0.0

    def describe(self) -> str:
        if self.device == "cuda":
            return f"{self.gpu_name} ({self.vram_gb:.1f} GB VRAM{', bf16' if self.bf16 else ''}), RAM {self.ram_gb:.0f} GB"
        return f"CPU only: {self.cpu_cores} cores, {self.ram_gb:.0f} GB RAM"


def total_ram_gb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().total / GB
    except ImportError:  # psutil comes with accelerate; keep a fallback for a bare core
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
        except (ValueError, OSError, AttributeError):
            return 0.0


def detect(path: str | Path = ".") -> Hardware:
    import torch

    hw = Hardware(device="cpu", cpu_cores=os.cpu_count() or 1, ram_gb=total_ram_gb(), disk_free_gb=free_disk_gb(path))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        hw.device, hw.gpu_name = "cuda", props.name
        hw.vram_gb = props.total_memory / GB
        hw.bf16 = torch.cuda.is_bf16_supported()
    return hw


def free_disk_gb(path: str | Path = ".") -> float:
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / GB


def profile_for(hw: Hardware) -> str:
    """The largest GPU profile that fits the card (a little below nominal: 8 GB cards report ~7.6 GiB), else cpu."""
    if hw.device != "cuda":
        return "cpu"
    fitting = [g for g in GPU_PROFILES if hw.vram_gb >= g * 0.9]
    return f"gpu-{max(fitting)}gb" if fitting else "gpu-6gb"


def detect_profile() -> str:
    return profile_for(detect())
