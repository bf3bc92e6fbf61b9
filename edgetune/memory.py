"""Memory estimate for LoRA/QLoRA training, and fitting batch size to a budget.

Rough but honest arithmetic (weights + adapter/optimizer + activations + logits + runtime overhead); printed before
training so a user on a 6-8 GB card sees an OOM coming before minutes of loading.
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 1024**3


@dataclass
class ModelShape:
    n_params: int
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    embed_params: int  # embeddings + lm_head (kept in 16-bit by 4-bit loaders)
    tied: bool = False

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """Count parameters exactly by building the model on the meta device (no memory, no weights)."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        n = sum(p.numel() for p in model.parameters())
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden, vocab = text.hidden_size, text.vocab_size
        tied = bool(getattr(text, "tie_word_embeddings", False))
        return cls(n_params=n, hidden=hidden, layers=text.num_hidden_layers, vocab=vocab,
                   intermediate=getattr(text, "intermediate_size", 4 * hidden),
                   embed_params=vocab * hidden * (1 if tied else 2), tied=tied)


@dataclass
class MemoryEstimate:
    weights_gb: float
    adapter_gb: float
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    device: str

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.adapter_gb + self.activations_gb + self.logits_gb + self.overhead_gb

    def describe(self) -> str:
        where = "VRAM" if self.device == "cuda" else "RAM"
        return (f"estimated peak {where} {self.total_gb:.1f} GB = weights {self.weights_gb:.2f} + LoRA/optimizer "
                f"{self.adapter_gb:.2f} + activations {self.activations_gb:.2f} + logits {self.logits_gb:.2f} "
                f"+ runtime {self.overhead_gb:.2f}")


def target_count(target_modules: list[str]) -> int:
    """Adapted matrices per block: `all-linear` means q, k, v, o and the three MLP projections (7)."""
    return 7 if list(target_modules) == ["all-linear"] else len(target_modules)


def lora_params(shape: ModelShape, r: int, n_targets: int) -> int:
    # Each targeted linear gets A (in x r) and B (r x out); in+out ~ hidden + intermediate on average.
    return shape.layers * n_targets * r * (shape.hidden + (shape.hidden + shape.intermediate) // 2)


def estimate(shape: ModelShape, *, r: int, n_targets: int, batch: int, seq: int, load_in_4bit: bool,
             checkpointing: bool, compute_bytes: int, device: str, eight_bit_optim: bool = False) -> MemoryEstimate:
    body = shape.n_params - shape.embed_params
    if load_in_4bit:  # NF4 + double-quant ~0.53 B/param; embeddings and lm_head stay in compute dtype
        weights = body * 0.53 + shape.embed_params * compute_bytes
    else:
        weights = shape.n_params * compute_bytes
    lp = lora_params(shape, r, n_targets)
    adapter = lp * (4 + 4 + (2 if eight_bit_optim else 8))  # fp32 weight + grad + Adam moments
    tokens = batch * seq
    # Per layer, per token, in compute dtype: ~34 x hidden values kept for backward (Korthikanti et al.),
    # attention scores excluded (SDPA/flash do not store them). Checkpointing keeps only each layer's input.
    per_layer = tokens * shape.hidden * compute_bytes * (2 if checkpointing else 34)
    recompute = 0 if not checkpointing else tokens * shape.hidden * compute_bytes * 34
    activations = shape.layers * per_layer + recompute
    logits = tokens * shape.vocab * 4 * 2  # fp32 logits and their gradient
    overhead = 0.6 * GB if device == "cuda" else 0.4 * GB
    return MemoryEstimate(weights / GB, adapter / GB, activations / GB, logits / GB, overhead / GB, device)


def fit_batch(make_estimate, batch: int, grad_accum: int, budget_gb: float) -> tuple[int, int, MemoryEstimate]:
    """Halve the batch (doubling accumulation, so the effective batch stays) until the estimate fits the budget."""
    est = make_estimate(batch)
    while est.total_gb > budget_gb and batch > 1:
        batch, grad_accum = batch // 2, grad_accum * 2
        est = make_estimate(batch)
    return batch, grad_accum, est
