"""Llama (1-3.x; Llama 3.1+ long-context RoPE as a rope_freqs tensor), Mistral v0.x (run as llama) and SmolLM3
(llama with every 4th layer free of RoPE). Reference: llama.cpp conversion/llama.py (LlamaModel, SmolLM3Model)."""
from __future__ import annotations

import math

import numpy as np

import gguf

from .base import Family, head_dim, rope_parameters, rope_type


class Llama(Family):
    arch = gguf.MODEL_ARCH.LLAMA
    permute_qk = True
    rope_types = ("default", "linear", "yarn", "llama3")  # llama3 is carried by the rope_freqs tensor

    def extra_tensors(self, cfg: dict) -> list[tuple[str, np.ndarray]]:
        return [("rope_freqs.weight", llama3_rope_freqs(cfg))] if rope_type(cfg) == "llama3" else []

    def notes(self, cfg: dict) -> list[str]:
        window = cfg.get("sliding_window")
        if window and cfg.get("use_sliding_window", True) and window < cfg.get("max_position_embeddings", 0):
            return [f"sliding_window={window}: llama.cpp attends to the whole context for this architecture, "
                    f"so outputs differ from transformers beyond {window} tokens"]
        return []


class SmolLM3(Llama):
    arch = gguf.MODEL_ARCH.SMOLLM3
    NO_ROPE_STEP = 4  # llama.cpp hard-codes it (src/models/smollm3.cpp): layer il skips RoPE when (il+1) % 4 == 0

    def refuse(self, cfg: dict) -> str | None:
        layers = cfg.get("no_rope_layers")
        expected = [int((i + 1) % self.NO_ROPE_STEP != 0) for i in range(cfg["num_hidden_layers"])]
        if layers is not None and list(layers) != expected:
            return ("no_rope_layers differs from every 4th layer without RoPE, the only pattern llama.cpp's "
                    "smollm3 architecture runs")
        return super().refuse(cfg)


def llama3_rope_freqs(cfg: dict) -> np.ndarray:
    """Llama 3.1+ long-context RoPE: llama.cpp takes per-dimension frequency factors as a rope_freqs tensor."""
    rope = rope_parameters(cfg)
    base = rope.get("rope_theta", 10000.0)
    dim = head_dim(cfg)
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)
