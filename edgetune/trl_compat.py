"""Let TRL 1.15's trainers run where Triton does not (the CPU torch wheel; Windows without triton-windows).

TRL computes per-token log-probs through `ChunkedLogProbFunction`, a Triton kernel, in every trainer (SFT, DPO, KTO,
GRPO). Without Triton the import fails, the name is None and the first training step raises AttributeError. This
installs a plain-PyTorch function with the same signature and outputs: it materialises the [tokens, vocab] logits
(what transformers' own loss does), which is fine at the sizes a CPU can train.
"""
from __future__ import annotations

import torch

OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


class TorchLogProb:
    """Drop-in for trl.kernels.ChunkedLogProbFunction (forward semantics of its `_transform` + statistics)."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=OUTPUTS):
        z = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        z = z / temperature
        logp = z.log_softmax(-1)
        log_probs = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
        log_sum_sq = torch.logsumexp(2 * logp, -1) if "log_sum_sq_probs" in outputs else None
        mean_logits = z.mean(-1) if "mean_logits" in outputs else None
        is_top1 = z.argmax(-1) == targets if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def ensure_trl_runs_here() -> bool:
    """Install the fallback when TRL's Triton kernel is unavailable. Returns True when it was installed."""
    from trl.trainer import utils

    if getattr(utils, "_ChunkedLogProbFunction", None) is not None:
        return False
    utils._ChunkedLogProbFunction = TorchLogProb
    return True
