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


def preload_unsloth(engine: str) -> bool:
    """Import unsloth now, first, when this process may train with it: the engine is `unsloth`, or `auto` on a
    CUDA machine with unsloth installed (`unsloth` on a machine without CUDA is left to `select` to refuse).
    Unsloth patches transformers, TRL and PEFT as it is imported and warns that
    it "may run slower or encounter memory issues" when they were imported before it. Imports torch only to ask
    for CUDA (Unsloth needs torch first anyway). Returns whether unsloth is now imported."""
    if engine == "hf" or not unsloth_available() or not cuda_available():
        return False  # (the real unsloth raises at import without a GPU; `select` explains instead)
    import unsloth  # noqa: F401

    return True


def engine_asked(argv: list[str]) -> str:
    """train.engine as this command line will resolve it (--engine, else the config file's or the resumed run's
    [train] engine, else auto), read without importing anything heavy."""
    import tomllib
    from pathlib import Path

    def value(*flags):
        for i, a in enumerate(argv):
            for f in flags:
                if a == f and i + 1 < len(argv):
                    return argv[i + 1]
                if a.startswith(f + "="):
                    return a.split("=", 1)[1]
        return None

    if engine := value("--engine"):
        return engine
    config = value("--config", "-c")
    if config is None and "--resume" in argv and (run := value("--run-dir", "-o")):
        config = str(Path(run) / "config.toml")
    try:
        return tomllib.loads(Path(config).read_text(encoding="utf-8")).get("train", {}).get("engine", "auto")
    except (TypeError, OSError, ValueError, AttributeError):  # no or unreadable config: `train` reports it
        return "auto"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_name(name: str, hw: Hardware, cfg: RunConfig) -> str:
    """The engine `select` picks, by name ("unsloth" or "hf"), without importing either (the memory plan needs it:
    the two engines hold different weights and activations on the GPU). auto: Unsloth when CUDA and unsloth are
    present, the config is one it supports and one process trains (several processes, i.e. train.nproc or a worker
    under torchrun / accelerate launch, train on the HF engine)."""
    if name == "unsloth":
        return "unsloth"
    several = cfg.train.nproc > 1 or inside_launch()
    if name == "auto" and hw.device == "cuda" and unsloth_available() and not cfg.lora.use_dora and not several:
        return "unsloth"
    return "hf"


def select(name: str, hw: Hardware, cfg: RunConfig) -> Engine:
    """The engine of `engine_name`; `unsloth` asked where it cannot run is refused with what to do instead."""
    if engine_name(name, hw, cfg) == "unsloth":
        if hw.device != "cuda":
            raise HardwareError("the Unsloth engine needs an NVIDIA GPU with CUDA; none was found",
                                hint="use --engine hf (or auto) on this machine")
        if not unsloth_available():
            raise HardwareError("--engine unsloth but unsloth is not installed",
                                hint='pip install "edgetune[unsloth]", or use --engine hf')
        from edgetune.engines.unsloth import UnslothEngine

        return UnslothEngine()
    from edgetune.engines.hf import HFEngine

    return HFEngine()
