"""What a model family is to the GGUF converter: its llama.cpp architecture, the hparams it writes, per-tensor
transforms and generated tensors. `Family` holds the llama-like defaults; each family file overrides what differs
(the layout of Ollama's `convert/` and llama.cpp's `conversion/`: adding a family is adding a file).

Only numpy and gguf here: `gguf_support` is asked at pre-flight, before torch or transformers are imported.
"""
from __future__ import annotations

import numpy as np

import gguf


def rope_parameters(cfg: dict) -> dict:
    """transformers 5 keeps rope settings in rope_parameters (maybe per layer type); 4.x in rope_theta/rope_scaling."""
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rope = dict(rope.get("full_attention", rope))
    if "rope_theta" not in rope and cfg.get("rope_theta") is not None:
        rope["rope_theta"] = cfg["rope_theta"]
    return rope


def rope_type(cfg: dict) -> str:
    rope = rope_parameters(cfg)
    return str(rope.get("rope_type") or rope.get("type") or "default").lower()


def head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


class Family:
    """A llama-shaped decoder: RMSNorm, RoPE on whole heads, SwiGLU MLP, optional tied embeddings."""

    arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.LLAMA
    permute_qk = False  # llama.cpp's LLAMA-style archs rotate interleaved pairs; HF rotates halves
    rope_types = ("default", "linear", "yarn")  # rope scalings this family can write
    # transformers' config defaults for settings a config.json may leave out (transformers 4.x saved only what
    # differed from them, e.g. the text_config of Google's multimodal Gemma 3 checkpoints)
    config_defaults: dict = {}

    def refuse(self, cfg: dict) -> str | None:
        """Why this checkpoint cannot be converted faithfully (None: it can)."""
        if rope_type(cfg) not in self.rope_types:
            return (f"rope type {rope_type(cfg)!r} is not supported for {cfg.get('model_type')} "
                    f"(supported: {', '.join(self.rope_types)})")
        return None

    def write_hparams(self, writer: gguf.GGUFWriter, cfg: dict) -> None:
        n_head = cfg["num_attention_heads"]
        writer.add_block_count(cfg["num_hidden_layers"])
        writer.add_context_length(cfg["max_position_embeddings"])
        writer.add_embedding_length(cfg["hidden_size"])
        writer.add_feed_forward_length(cfg["intermediate_size"])
        writer.add_head_count(n_head)
        writer.add_head_count_kv(cfg.get("num_key_value_heads") or n_head)
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        writer.add_vocab_size(cfg["vocab_size"])
        writer.add_rope_dimension_count(self.rope_dims(cfg))
        if cfg.get("head_dim"):
            writer.add_key_length(cfg["head_dim"])
            writer.add_value_length(cfg["head_dim"])
        rope = rope_parameters(cfg)
        if (theta := rope.get("rope_theta")) is not None:
            writer.add_rope_freq_base(float(theta))
        kind, factor = rope_type(cfg), rope.get("factor")
        if kind == "linear" and factor:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(factor)
        elif kind == "yarn" and factor:
            writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            writer.add_rope_scaling_factor(factor)
            writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])

    def rope_dims(self, cfg: dict) -> int:
        return head_dim(cfg)

    def transforms(self, name: str) -> bool:
        """Whether tensor `name` (GGUF name) needs `transform`; most families need nothing."""
        return False

    def transform(self, name: str, data: np.ndarray) -> np.ndarray:
        """The tensor's values as llama.cpp expects them (float32 in, float32 out)."""
        return data

    def extra_tensors(self, cfg: dict) -> list[tuple[str, np.ndarray]]:
        """Tensors llama.cpp needs that the checkpoint does not hold (rope frequency factors)."""
        return []

    def notes(self, cfg: dict) -> list[str]:
        """Warnings for the plan: behaviour that differs from transformers in documented ways."""
        return []
