"""Which checkpoints onnxruntime-genai's model builder (0.18) exports faithfully, and the config it needs to read.

Measured on the tiny family checkpoints of tests/families.py (2026-12; fp32, verified against transformers):
llama (incl. Llama 3.2's llama3 RoPE), mistral, qwen2 and qwen3 export with mean KL divergence < 1e-8; phi3
(Phi-4-mini's partial rotary + LongRoPE, Phi-3.5) exports once its config spells the rope type the way transformers
4 did (`rope_parameters.type`), which `builder_input` adds. The builder cannot read transformers 5's Gemma 3 config
(RoPE parameters per layer type) and crashes on SmolLM3's no-RoPE layers (no position_ids input), so those are
refused up front rather than after training.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

SUPPORTED = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2.5", "qwen3": "Qwen3", "phi3": "Phi-3.5 / Phi-4-mini"}
REFUSED = {
    "gemma3_text": "onnxruntime-genai 0.18's builder cannot read transformers 5's Gemma 3 config (RoPE parameters per "
                   "layer type)",
    "gemma3": "onnxruntime-genai 0.18's builder cannot read transformers 5's Gemma 3 config (RoPE parameters per "
              "layer type)",
    "smollm3": "onnxruntime-genai 0.18's builder fails on SmolLM3's no-RoPE layers",
}


def onnx_support(config: dict) -> str | None:
    """None when a checkpoint with this config.json can be exported to ONNX; else why not, in one sentence."""
    model_type = str(config.get("model_type"))
    if model_type == "phi3" and (reason := _rotary_layout(config)):
        return reason
    if model_type in SUPPORTED:
        return None
    supported = ", ".join(SUPPORTED.values())
    if model_type in REFUSED:
        return f"{REFUSED[model_type]}; ONNX export works for {supported} (GGUF export is unaffected)"
    return f"model type {model_type!r} is not one edgetune exports to ONNX ({supported})"


def _rotary_layout(config: dict) -> str | None:
    """onnxruntime's GroupQueryAttention needs the rotary half-width to be a multiple of 8 (Phi-4-mini: 48)."""
    rope = config.get("rope_parameters") or {}
    fraction = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    rotary = int(fraction * config["hidden_size"]) // config["num_attention_heads"]
    if (rotary // 2) % 8:
        return (f"onnxruntime's attention kernel needs rotary dimensions / 2 to be a multiple of 8; this phi3 model "
                f"rotates {rotary} dimensions per head")
    return None


def builder_input(merged: Path, staging: Path) -> Path:
    """The folder to hand the builder: `merged` itself, or `staging` holding links to its files and a config.json
    with the transformers 4 spelling of the rope type that the builder's phi3 path reads."""
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_type" not in rope or "type" in rope:
        return merged
    staging.mkdir(parents=True, exist_ok=True)
    for item in merged.iterdir():
        if item.name != "config.json":
            os.symlink(item.resolve(), staging / item.name)
    config["rope_parameters"] = {**rope, "type": rope["rope_type"]}
    (staging / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return staging
