"""The memory planner's training estimates at real model shapes (Llama 3.2 1B/3B, Llama 3.1 8B): QLoRA r 16 on all
linear layers, gradient checkpointing, 16-bit compute on CUDA, the paged 8-bit optimizer, batch 1, at 1024 and 2048
tokens, per engine: Unsloth, and transformers + PEFT + bitsandbytes with TRL's tiled LM head (Linux: Triton ships
with torch) and without it (native Windows, no Triton: full logits). Estimates, not measurements: the README quotes
them for GPUs this project has not run on (benchmarks/plan_cuda.py sets the plan against what an H200 measured).

    python benchmarks/plan_sizes.py
"""
from __future__ import annotations

SHAPES = {  # config.json of meta-llama/Llama-3.2-1B, -3B and Llama-3.1-8B
    "1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, tie=True),
    "3B": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, tie=True),
    "8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, tie=False),
}


def main() -> None:
    from transformers import LlamaConfig

    from edgetune.memory import ModelShape, estimate, target_count

    for size, shape in SHAPES.items():
        shape = dict(shape)
        tie = shape.pop("tie")
        config = LlamaConfig(**shape, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=tie)
        model = ModelShape.from_config(config)
        for seq in (1024, 2048):
            for engine, fused, label in (("unsloth", True, "unsloth"), ("hf", True, "hf"),
                                         ("hf", False, "hf, no Triton")):
                est = estimate(model, r=16, n_targets=target_count(["all-linear"]), sequences=1, seq=seq,
                               load_in_4bit=True, checkpointing=True, compute_bytes=2, device="cuda",
                               eight_bit_optim=True, engine=engine, fused_head=fused)
                print(f"{size} ({model.n_params / 1e9:.2f}B params), {seq} tokens, {label}: {est.describe()}")


if __name__ == "__main__":
    main()
