"""The engine protocol, precision choice and LoRA settings shared by the engines."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Protocol

from edgetune.config import RunConfig
from edgetune.errors import ConfigError
from edgetune.hardware import Hardware
from edgetune.models import ResolvedModel


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    device: str  # cuda | cpu

    @property
    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def nbytes(self) -> int:
        return 4 if self.name == "fp32" else 2


def choose_precision(requested: str, hw: Hardware) -> Precision:
    """auto: bf16 where the GPU has it, else fp16 on CUDA; fp32 on CPU (bf16 is ~16x slower without AVX512-bf16)."""
    if requested == "auto":
        if hw.device == "cuda":
            return Precision("bf16" if hw.bf16 else "fp16", "cuda")
        return Precision("fp32", "cpu")
    if hw.device == "cpu" and requested == "fp16":
        raise ConfigError(["`train.precision` = 'fp16' is not supported for CPU training; set fp32 (or auto)"])
    if hw.device == "cuda" and requested == "bf16" and not hw.bf16:
        raise ConfigError([f"`train.precision` = 'bf16' but {hw.gpu_name} has no bf16; set fp16 (or auto)"])
    return Precision(requested, hw.device)


class Engine(Protocol):
    name: str

    def load_tokenizer(self, model: ResolvedModel, cfg: RunConfig) -> Any:
        """The tokenizer only (cheap), so data can be validated before the model loads."""

    def load_for_training(self, model: ResolvedModel, cfg: RunConfig, precision: Precision,
                          init_adapter=None) -> tuple[Any, Any]:
        """Base model with LoRA adapters attached (new, or `init_adapter` to continue), plus tokenizer."""

    def load_base(self, model: ResolvedModel, cfg: RunConfig, precision: Precision) -> Any:
        """The base model exactly as training saw it (4-bit when configured), without adapters."""


def linear_names(model) -> list[str]:
    """Names of the linear layers inside the model's blocks (the output head excluded)."""
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) or "Linear" in type(m).__name__}
    return sorted(names - {"lm_head"})


def lora_kwargs(cfg: RunConfig, model=None) -> dict:
    """LoRA settings for PEFT / Unsloth; `all-linear` becomes the model's own linear layer names."""
    lc = cfg.lora
    targets = list(lc.target_modules)
    if targets == ["all-linear"]:
        targets = linear_names(model) if model is not None else "all-linear"
    return dict(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=targets,
                use_rslora=lc.use_rslora, bias="none")


PATCHED_BY_UNSLOTH = ("transformers", "trl", "peft")


def imported_before_unsloth() -> list[str]:
    """The libraries Unsloth patches that were already imported when it was (empty when the order was right)."""
    return [m for m in PATCHED_BY_UNSLOTH if m in sys.modules] if "unsloth" not in sys.modules else []
