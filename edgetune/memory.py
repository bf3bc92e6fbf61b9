"""Memory estimate for LoRA/QLoRA training and the plan that fits a run to the machine: `plan()` is the one place
that knows each method's batch rules (what TRL accepts) and how much a step holds; the CLI (edgetune.train) and the
TUI's setup screen both show what it returns.

Rough but honest arithmetic (weights + adapter/optimizer + activations + logits + runtime overhead); printed before
training so a user on a 6-8 GB card sees an OOM coming before minutes of loading.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

GB = 1024**3
# Per token and hidden unit, a transformer layer keeps 34 bytes for backward in 16-bit, i.e. 17 values (Korthikanti
# et al. 2022, no recomputation; attention scores excluded: SDPA/flash keep none). Measured on SmolLM2 in fp32 with
# torch's saved-tensor hooks: 17.5 values. Each value then costs `compute_bytes` once.
ACT_VALUES = 17
# glibc keeps a training step's freed temporaries in its heap (they sit between live tensors), so on CPU peak RSS
# per token is 1.3-1.55x what autograd holds (measured, SmolLM2 fp32; with a fixed mmap threshold it is 1.0x).
# benchmarks/plan_accuracy.py compares the whole estimate with the measured peak.
CPU_HEAP_SLACK = 1.4
# On CUDA with Triton, TRL 1.15's trainers (SFT, DPO, KTO, GRPO) call the model with `fused_lm_head=True`: the LM
# head runs over tiles of at most 4096 positions x 32768 vocabulary entries and never holds the whole logits
# (trl/kernels/chunked_logprob.py). Unsloth trains through the same head (its 1B step held 1.5 GiB on an H200, where
# full logits alone would be 2.9).
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB = 4096, 32768


@dataclass
class ModelShape:
    n_params: int
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    embed_params: int  # embeddings + lm_head (kept in 16-bit by 4-bit loaders)
    tied: bool = False
    kv_hidden: int = 0  # key/value width per layer (heads x head_dim; smaller with GQA); 0 = hidden

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
        heads = getattr(text, "num_attention_heads", 0) or 1
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
        return cls(n_params=n, hidden=hidden, layers=text.num_hidden_layers, vocab=vocab,
                   intermediate=getattr(text, "intermediate_size", 4 * hidden),
                   embed_params=vocab * hidden * (1 if tied else 2), tied=tied, kv_hidden=kv)


@dataclass
class MemoryEstimate:
    weights_gb: float
    adapter_gb: float
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    device: str
    checkpoint_gb: float = 0.0  # CPU: the 16-bit checkpoint file, mapped whole until loading ends

    @property
    def total_gb(self) -> float:
        """A training step: what must stay resident (the budget and the batch fitting use this)."""
        return self.weights_gb + self.adapter_gb + self.activations_gb + self.logits_gb + self.overhead_gb

    @property
    def loading_gb(self) -> float:
        """The end of loading on CPU: transformers keeps every safetensors file mapped (and touched) until the last
        weight is in, beside the loaded weights (measured on a Llama-3.2-3B shape: 6.4 GB of file pages + 4.5 GB)."""
        return self.checkpoint_gb + self.weights_gb + self.overhead_gb if self.checkpoint_gb else 0.0

    @property
    def peak_gb(self) -> float:
        return max(self.total_gb, self.loading_gb)

    def describe(self) -> str:
        where = "VRAM" if self.device == "cuda" else "RAM"
        step = (f"weights {self.weights_gb:.2f} + LoRA/optimizer {self.adapter_gb:.2f} + activations "
                f"{self.activations_gb:.2f} + logits {self.logits_gb:.2f} + runtime {self.overhead_gb:.2f}")
        if self.loading_gb <= self.total_gb:
            return f"estimated peak {where} {self.total_gb:.1f} GB = {step}"
        return (f"estimated peak {where} {self.loading_gb:.1f} GB while loading (the {self.checkpoint_gb:.1f} GB "
                f"checkpoint file mapped, pages the OS can drop, + weights {self.weights_gb:.2f} + runtime "
                f"{self.overhead_gb:.2f}); a training step holds {self.total_gb:.1f} GB = {step}")


def target_count(target_modules: list[str]) -> int:
    """Adapted matrices per block: `all-linear` means q, k, v, o and the three MLP projections (7)."""
    return 7 if list(target_modules) == ["all-linear"] else len(target_modules)


def lora_params(shape: ModelShape, r: int, n_targets: int) -> int:
    # Each targeted linear gets A (in x r) and B (r x out); in+out ~ hidden + intermediate on average.
    return shape.layers * n_targets * r * (shape.hidden + (shape.hidden + shape.intermediate) // 2)


def estimate(shape: ModelShape, *, r: int, n_targets: int, sequences: int, seq: int, load_in_4bit: bool,
             checkpointing: bool, compute_bytes: int, device: str, eight_bit_optim: bool = False,
             cache_sequences: int = 0, engine: str = "hf", fused_head: bool = False) -> MemoryEstimate:
    """Peak memory of one training step over `sequences` sequences of `seq` tokens. `cache_sequences`: sequences
    generated at once without gradients before the step (GRPO): their KV cache is the peak when it is larger.
    `engine`: "unsloth" or "hf" (they hold different weights and activations); `fused_head`: the trainer's LM head
    runs in tiles (TRL on CUDA with Triton, see HEAD_TILE_TOKENS)."""
    body = shape.n_params - shape.embed_params
    # PEFT's prepare_model_for_kbit_training (the HF engine's QLoRA) casts every parameter that is not 4-bit to fp32:
    # embeddings, lm_head and norms; so the residual stream, which starts at the embedding, is fp32 too
    upcast = load_in_4bit and engine != "unsloth"
    embed_bytes = 4 if upcast else compute_bytes
    if load_in_4bit:  # NF4 + double-quant ~0.53 B/param
        weights = body * 0.53 + shape.embed_params * embed_bytes
    else:
        weights = shape.n_params * compute_bytes
    lp = lora_params(shape, r, n_targets)
    adapter = lp * (4 + 4 + (2 if eight_bit_optim else 8))  # fp32 weight + grad + Adam moments
    tokens = sequences * seq
    token_layer = tokens * shape.hidden * compute_bytes  # one value per token and hidden unit, every layer
    layer_input = tokens * shape.hidden * embed_bytes  # the residual stream at a layer boundary
    # bytes = layers x tokens x hidden x ACT_VALUES x compute_bytes; checkpointing keeps each layer's input (1 value)
    # and recomputes one layer at a time in backward (ACT_VALUES, once). Unsloth's checkpointing moves the layer
    # inputs to host memory (two stay on the GPU while they are copied).
    if checkpointing and engine == "unsloth" and device == "cuda":
        activations = token_layer * (2 + ACT_VALUES)
    elif checkpointing:
        activations = layer_input * shape.layers + token_layer * ACT_VALUES
    else:
        activations = token_layer * shape.layers * ACT_VALUES
    if fused_head:  # one tile of logits in compute dtype, the head's rows cast to it when they are fp32, and the
        # fp32 gradient of the hidden states it accumulates in backward
        logits = (min(tokens, HEAD_TILE_TOKENS) * min(shape.vocab, HEAD_TILE_VOCAB) * compute_bytes
                  + (min(shape.vocab, HEAD_TILE_VOCAB) * shape.hidden * compute_bytes if embed_bytes != compute_bytes
                     else 0) + tokens * shape.hidden * 4)
    else:  # logits in compute dtype and the fp32 log-softmax the loss keeps, plus both their gradients in backward
        logits = tokens * shape.vocab * (2 * compute_bytes + 8)
    if cache_sequences:  # keys and values of every layer for the whole generation batch, in compute dtype
        kv_cache = 2 * shape.layers * (shape.kv_hidden or shape.hidden) * cache_sequences * seq * compute_bytes
        activations = max(activations, kv_cache)
    if device != "cuda":
        activations, logits = activations * CPU_HEAP_SLACK, logits * CPU_HEAP_SLACK
    # CUDA context, kernels and the allocator's cache (torch's own counters leave the context out); on CPU torch +
    # transformers + TRL imported (measured 0.5-0.6)
    overhead = 0.6 * GB
    checkpoint = 0 if device == "cuda" else shape.n_params * 2  # 16-bit safetensors; on CUDA it is host RAM
    return MemoryEstimate(weights / GB, adapter / GB, activations / GB, logits / GB, overhead / GB, device,
                          checkpoint / GB)


def fused_head_available(device: str) -> bool:
    """Whether TRL's trainers will run the tiled LM head: CUDA and Triton (which ships with torch on Linux only)."""
    import importlib.util

    return device == "cuda" and importlib.util.find_spec("triton") is not None


def fit_batch(make_estimate, batch: int, grad_accum: int, budget_gb: float,
              min_batch: int = 1) -> tuple[int, int, MemoryEstimate]:
    """The largest per-device batch that fits the budget among those that keep the effective batch (batch x
    accumulation) exactly, i.e. its divisors, and no smaller than `min_batch`; the smallest one when none fits."""
    effective = batch * grad_accum
    for b in sorted((d for d in divisors(effective) if min_batch <= d <= batch), reverse=True):
        est = make_estimate(b)
        if est.total_gb <= budget_gb:
            break
    return b, effective // b, est


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# --- the plan: method rules + estimate + fit, shared by the CLI and the TUI --------------------------------------

PROMPT_TOKENS_GUESS = 256  # GRPO before its data is read: a prompt of this many tokens, plus the completion


@dataclass(frozen=True)
class MethodRule:
    """What a method's TRL trainer accepts as a batch, and how many sequences an example puts through the model."""

    sequences_per_example: int = 1  # with gradients, per example of the per-device batch
    min_batch: int = 1  # the smallest per-device batch the trainer accepts
    multiple: int = 1  # the effective batch (batch x accumulation) must be a multiple of this
    why: str = ""  # the rule in words, for the note that says the batch changed


def method_rule(m) -> MethodRule:
    """`m` is a MethodConfig. The rules as TRL 1.15 enforces them (see tests/unit/test_memory_plan.py)."""
    if m.name == "dpo":  # chosen and rejected run through the model together
        return MethodRule(sequences_per_example=2)
    if m.name == "kto":  # KTOTrainer raises at batch 1: its KL term pairs each completion with another of the batch
        return MethodRule(min_batch=2, why="KTO needs at least 2 examples per device step (TRL pairs each "
                                           "completion with another of the batch for its KL term)")
    if m.name == "grpo":  # the batch counts completions; GRPOConfig: generation batch % num_generations == 0
        g = max(1, m.num_generations)
        return MethodRule(multiple=g, why=f"GRPO generates batch x accumulation completions at once, in whole "
                                          f"groups of method.num_generations = {g}")
    return MethodRule()


def legal_batch(batch: int, grad_accum: int, rule: MethodRule) -> tuple[int, int]:
    """The (batch, accumulation) nearest the asked one that the trainer accepts: the effective batch is kept when a
    per-device batch allows it, else rounded up to the next one that does."""
    batch, grad_accum = max(1, batch), max(1, grad_accum)  # the TUI plans while values are being typed
    effective = -(-(batch * grad_accum) // rule.multiple) * rule.multiple  # whole GRPO groups
    want = max(batch, rule.min_batch)
    ok = [d for d in divisors(effective) if rule.min_batch <= d <= want]
    if not ok:  # e.g. KTO at 1 x 3: no batch >= 2 divides 3, so round up to a multiple of both rules
        step = rule.multiple * rule.min_batch // gcd(rule.multiple, rule.min_batch)
        effective = -(-effective // step) * step
        ok = [d for d in divisors(effective) if rule.min_batch <= d <= want]
    return max(ok), effective // max(ok)


def budget_gb(hw) -> float:
    """What training may use: 92% of VRAM on CUDA, 80% of RAM on CPU (the rest is the desktop and the OS)."""
    return hw.vram_gb * 0.92 if hw.device == "cuda" else hw.ram_gb * 0.8


@dataclass
class MemoryPlan:
    method: str
    batch: int  # per device step (GRPO: completions)
    grad_accum: int
    sequences: int  # sequences with gradients per device step
    seq_len: int  # tokens per sequence
    from_data: bool  # seq_len is the longest sequence of the data (else train.max_length or a guess)
    budget_gb: float
    estimate: MemoryEstimate | None  # None when the model's shape is unknown (the batch rules still apply)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (text, "info" | "warning"), in order

    @property
    def effective_batch(self) -> int:
        return self.batch * self.grad_accum

    @property
    def fits(self) -> bool:
        return self.estimate is None or self.estimate.total_gb <= self.budget_gb


def plan(cfg, shape: ModelShape | None, hw, precision, longest: int | None = None,
         engine: str | None = None, fused_head: bool | None = None) -> MemoryPlan:
    """Batch, accumulation and memory estimate for training `cfg` (a RunConfig of one method) on `hw` (a Hardware)
    at `precision` (anything with `.nbytes`). `longest`: tokens in the longest sequence of the data (batches pad to
    it), else max_length is assumed. The batch is one the method's trainer accepts, shrunk (keeping the effective
    batch) until the estimate fits the budget; `notes` say what changed and why. `engine`: "unsloth" or "hf", else
    the one `edgetune train` would pick for cfg on hw; `fused_head`: whether TRL runs its tiled LM head, else
    whether this machine can (fused_head_available)."""
    t, m = cfg.train, cfg.method
    if engine is None:
        from edgetune.engines.choose import engine_name

        engine = engine_name(t.engine, hw, cfg)
    fused = fused_head_available(hw.device) if fused_head is None else fused_head
    rule = method_rule(m)
    if longest:
        seq = longest
    else:
        seq = min(t.max_length, PROMPT_TOKENS_GUESS + m.max_completion_length) if m.name == "grpo" else t.max_length
    budget, notes = budget_gb(hw), []

    def note(text: str, level: str = "info") -> None:
        notes.append((text, level))

    batch, accum = legal_batch(t.batch_size, t.grad_accum, rule)
    if (batch, accum) != (t.batch_size, t.grad_accum) and rule.why:  # (else a value < 1, which validation names)
        asked = t.batch_size * t.grad_accum
        kept = "same effective batch" if batch * accum == asked else f"effective batch {asked} -> {batch * accum}"
        note(f"{rule.why}: using batch {batch} x accumulation {accum} instead of {t.batch_size} x {t.grad_accum} "
             f"({kept})", "warning")
    effective = batch * accum

    def make(b: int) -> MemoryEstimate:
        return estimate(shape, r=cfg.lora.r, n_targets=target_count(cfg.lora.target_modules),
                        sequences=b * rule.sequences_per_example, seq=seq, load_in_4bit=cfg.model.load_in_4bit,
                        checkpointing=t.gradient_checkpointing, compute_bytes=precision.nbytes, device=hw.device,
                        eight_bit_optim="8bit" in t.optimizer or (t.optimizer == "auto" and hw.device == "cuda"),
                        cache_sequences=effective if m.name == "grpo" else 0, engine=engine, fused_head=fused)

    est = None
    if shape is not None:
        fitted, accum_fitted, est = fit_batch(make, batch, accum, budget, rule.min_batch)
        if fitted != batch:
            note(f"batch {batch} x accumulation {accum} does not fit {budget:.1f} GB; using batch {fitted} x "
                 f"accumulation {accum_fitted} (same effective batch)", "warning")
        batch, accum = fitted, accum_fitted
        what = {"dpo": " (chosen + rejected)", "grpo": f", {effective} completions generated at once",
                "cpt": " (raw text packed into full blocks)"}.get(m.name, "")
        longest_note = " (the longest in this data)" if longest else ""
        if hw.device == "cuda":
            what += f"; {engine} engine" + (", LM head in tiles" if fused else "")
        n = batch * rule.sequences_per_example
        note(f"{shape.n_params / 1e6:,.1f}M parameters; {n} sequence{'s' * (n != 1)} of {seq} tokens per step"
             f"{longest_note}{what}: {est.describe()}")
        if est.total_gb > budget:
            note(f"the estimate exceeds the {budget:.1f} GB budget even at batch {batch}: lower train.max_length, "
                 "enable model.load_in_4bit and train.gradient_checkpointing, or use a smaller model", "warning")
    return MemoryPlan(m.name, batch, accum, batch * rule.sequences_per_example, seq, bool(longest), budget, est, notes)
