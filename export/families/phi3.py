"""Phi-3 / Phi-3.5 / Phi-4-mini (`phi3`): fused qkv_proj and gate_up_proj (llama.cpp keeps them fused), partial
rotary (Phi-4-mini rotates 3/4 of each head), LongRoPE as rope_factors_long/short tensors plus an attention factor.
Reference: llama.cpp conversion/phi.py (Phi3MiniModel), src/models/phi3.cpp.

llama.cpp picks the long or short factors from the context size (n_ctx > original_max_position_embeddings), while
transformers picks them from each sequence's length; within the original context (4k for Phi-3.5/4-mini) both use
the short factors.
"""
from __future__ import annotations

import math

import numpy as np

import gguf

from .base import Family, head_dim, rope_parameters, rope_type


def _original_context(cfg: dict) -> int:
    rope = rope_parameters(cfg)
    return rope.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or \
        cfg["max_position_embeddings"]


class Phi3(Family):
    arch = gguf.MODEL_ARCH.PHI3
    rope_types = ("default", "longrope", "su")

    def refuse(self, cfg: dict) -> str | None:
        if head_dim(cfg) * cfg["num_attention_heads"] != cfg["hidden_size"]:
            return "head_dim x heads differs from hidden_size, which llama.cpp's phi3 architecture assumes"
        rope = rope_parameters(cfg)
        if rope_type(cfg) in ("longrope", "su"):
            long, short = rope.get("long_factor"), rope.get("short_factor")
            if not long or not short or len(long) != len(short) or len(long) * 2 != self.rope_dims(cfg):
                return f"LongRoPE factors must both have {self.rope_dims(cfg) // 2} entries (half the rotary dims)"
        return super().refuse(cfg)

    def rope_dims(self, cfg: dict) -> int:
        fraction = rope_parameters(cfg).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
        return int(fraction * cfg["hidden_size"]) // cfg["num_attention_heads"]

    def write_hparams(self, writer: gguf.GGUFWriter, cfg: dict) -> None:
        super().write_hparams(writer, cfg)
        writer.add_rope_scaling_orig_ctx_len(_original_context(cfg))
        writer.add_sliding_window(cfg.get("sliding_window") or 0)  # 0 marks Phi-4 (llama.cpp disables SWA anyway)
        if rope_type(cfg) in ("longrope", "su"):
            scale = cfg["max_position_embeddings"] / _original_context(cfg)
            factor = math.sqrt(1 + math.log(scale) / math.log(_original_context(cfg))) if scale > 1.0 else 1.0
            writer.add_rope_scaling_attn_factors(rope_parameters(cfg).get("attention_factor") or factor)

    def extra_tensors(self, cfg: dict) -> list[tuple[str, np.ndarray]]:
        if rope_type(cfg) not in ("longrope", "su"):
            return []
        rope = rope_parameters(cfg)
        return [("rope_factors_long.weight", np.asarray(rope["long_factor"], dtype=np.float32)),
                ("rope_factors_short.weight", np.asarray(rope["short_factor"], dtype=np.float32))]

    def notes(self, cfg: dict) -> list[str]:
        if cfg.get("sliding_window") and cfg["sliding_window"] < cfg["max_position_embeddings"]:
            return [f"sliding_window={cfg['sliding_window']}: llama.cpp runs phi3 without it (full attention), so "
                    f"outputs differ from transformers beyond {cfg['sliding_window']} tokens"]
        return []
