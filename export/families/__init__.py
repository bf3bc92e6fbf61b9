"""The model families edgetune exports to GGUF, one file each, and the pre-flight question "can this be exported?".

`gguf_support(config)` answers from config.json alone (numpy + gguf imports only), so `validate`, `train` and the
app's setup screen can say it before any training.
"""
from __future__ import annotations

from .base import Family
from .gemma3 import Gemma3
from .llama import Llama, SmolLM3
from .phi3 import Phi3
from .qwen import Qwen2, Qwen3

# config.json model_type -> family
FAMILIES: dict[str, Family] = {
    "llama": Llama(),
    "mistral": Llama(),  # llama.cpp's converter maps HF Mistral (v0.x) to the llama architecture
    "qwen2": Qwen2(),
    "qwen3": Qwen3(),
    "gemma3_text": Gemma3(),
    "gemma3": Gemma3(),  # the multimodal wrapper: its language model, from text_config
    "phi3": Phi3(),
    "smollm3": SmolLM3(),
}

# Families llama.cpp runs but edgetune does not convert yet (their hybrid layers need converter work of their own).
NOT_YET = {
    "gemma3n": "Gemma 3n", "gemma3n_text": "Gemma 3n", "gemma4": "Gemma 4", "gemma4_text": "Gemma 4",
    "qwen3_5": "Qwen3.5", "qwen3_5_text": "Qwen3.5", "qwen3_next": "Qwen3-Next", "lfm2": "LFM2",
    "qwen3_5_moe": "Qwen3.5", "qwen3_5_moe_text": "Qwen3.5", "lfm2_moe": "LFM2", "lfm2_vl": "LFM2",
    "granitemoehybrid": "Granite 4", "mistral3": "Ministral 3 / Mistral Small 3", "ministral3": "Ministral 3",
}

SUPPORTED = "Llama 3.x, Mistral v0.x, Qwen2.5, Qwen3, Gemma 3, Phi-3.5 / Phi-4-mini, SmolLM3"


def text_config(cfg: dict) -> dict:
    """The language model's settings as transformers reads them: multimodal wrappers (gemma3, mistral3) nest them in
    text_config, and settings left out take the family's defaults."""
    nested = cfg.get("text_config") or {}
    family = FAMILIES.get(str(nested.get("model_type"))) or family_for(cfg)
    return {**(family.config_defaults if family else {}), **cfg, **nested}


def family_for(cfg: dict) -> Family | None:
    return FAMILIES.get(str(cfg.get("model_type")))


def gguf_support(config: dict) -> str | None:
    """None when a checkpoint with this config.json can be exported to GGUF; else why not, in one sentence."""
    model_type = str(config.get("model_type"))
    if model_type in NOT_YET:
        return (f"model type {model_type!r} ({NOT_YET[model_type]}) runs in llama.cpp, but edgetune cannot export "
                f"it yet; exportable families: {SUPPORTED}")
    family = family_for(config)
    if family is None:
        return f"model type {model_type!r} is not supported for GGUF export; exportable families: {SUPPORTED}"
    try:
        return family.refuse(text_config(config))
    except (KeyError, TypeError, ValueError) as e:
        return f"config.json of this {model_type} model lacks or garbles a setting the converter needs ({e})"
