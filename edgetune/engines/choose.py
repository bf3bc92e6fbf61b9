"""Engine selection: Unsloth where it can run, else transformers + PEFT. Apart from base.py, which the engines
import, so that choosing an engine and being one never import each other."""
from __future__ import annotations

import importlib.util

from edgetune.config import RunConfig
from edgetune.distributed import inside_launch
from edgetune.engines.base import Engine
from edgetune.errors import HardwareError
from edgetune.hardware import Hardware


def unsloth_available() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def select(name: str, hw: Hardware, cfg: RunConfig) -> Engine:
    """auto: Unsloth when CUDA and unsloth are present, the config is one it supports and one process trains; else
    the HF engine."""
    if name == "unsloth":
        if hw.device != "cuda":
            raise HardwareError("the Unsloth engine needs an NVIDIA GPU with CUDA; none was found",
                                hint="use --engine hf (or auto) on this machine")
        if not unsloth_available():
            raise HardwareError("--engine unsloth but unsloth is not installed",
                                hint='pip install "edgetune[unsloth]", or use --engine hf')
        from edgetune.engines.unsloth import UnslothEngine

        return UnslothEngine()
    # several processes (train.nproc, or a worker under torchrun / accelerate launch) train on the HF engine
    several = cfg.train.nproc > 1 or inside_launch()
    if name == "auto" and hw.device == "cuda" and unsloth_available() and not cfg.lora.use_dora and not several:
        from edgetune.engines.unsloth import UnslothEngine

        return UnslothEngine()
    from edgetune.engines.hf import HFEngine

    return HFEngine()
