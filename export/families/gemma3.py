"""Gemma 3 text models (270M-27B; `gemma3_text`, and `gemma3` checkpoints whose config nests text_config).

What llama.cpp's GEMMA3 architecture needs (conversion/gemma.py Gemma3Model, src/models/gemma3.cpp):
- every RMSNorm weight + 1 (transformers' Gemma3RMSNorm multiplies by 1 + weight);
- the sliding-window layers: window size, which layers (written as a per-layer pattern, exact for any layout), and
  their own RoPE base (10k local vs 1M global); linear RoPE scaling (4B+) applies to global layers only, as in
  llama.cpp's default for SWA layers;
- embeddings scaled by sqrt(hidden) and attention scaled by 1/sqrt(head_dim) are built into llama.cpp's graph, so a
  checkpoint whose query_pre_attn_scalar differs from that is refused rather than converted wrong.
"""
from __future__ import annotations

import numpy as np

import gguf

from .base import Family, head_dim


def _layer_types(cfg: dict) -> list[str]:
    if cfg.get("layer_types"):
        return list(cfg["layer_types"])
    pattern = cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or 6
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(cfg["num_hidden_layers"])]


class Gemma3(Family):
    arch = gguf.MODEL_ARCH.GEMMA3
    rope_types = ("default", "linear")
    # transformers' Gemma3TextConfig defaults (4.x spelling of the RoPE bases): gemma-3-4b-it and up list only
    # hidden/intermediate sizes, layers, sliding_window and the linear rope_scaling in their text_config
    config_defaults = {
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256, "sliding_window": 4096,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "tie_word_embeddings": True,
    }

    def refuse(self, cfg: dict) -> str | None:
        if cfg.get("attn_logit_softcapping"):
            return "attn_logit_softcapping is set, which llama.cpp's gemma3 architecture does not implement"
        if cfg.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            return f"hidden_activation {cfg.get('hidden_activation')!r}: llama.cpp runs gemma3 with tanh-GELU only"
        scalar = cfg.get("query_pre_attn_scalar", head_dim(cfg))
        expected = cfg["hidden_size"] // cfg["num_attention_heads"] if cfg["num_hidden_layers"] == 62 else head_dim(cfg)
        if scalar != expected:
            return (f"query_pre_attn_scalar={scalar}, but llama.cpp scales gemma3 attention by 1/sqrt({expected}) "
                    "for this size")
        return super().refuse(cfg)

    def write_hparams(self, writer: gguf.GGUFWriter, cfg: dict) -> None:
        super().write_hparams(writer, cfg)  # with key/value length: Gemma's head_dim is not hidden / heads
        if softcap := cfg.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(softcap)
        types = _layer_types(cfg)
        if cfg.get("sliding_window") and "sliding_attention" in types:
            writer.add_sliding_window(cfg["sliding_window"])
            writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])
            local = (cfg.get("rope_parameters") or {}).get("sliding_attention") or {}
            theta = local.get("rope_theta") or cfg.get("rope_local_base_freq") or 10000.0
            writer.add_rope_freq_base_swa(float(theta))

    def transforms(self, name: str) -> bool:
        return name.endswith("norm.weight")  # attn/ffn pre+post norms, q/k norms, output norm

    def transform(self, name: str, data: np.ndarray) -> np.ndarray:
        return data.astype(np.float32) + 1.0  # transformers' Gemma3RMSNorm multiplies by (1 + weight)
