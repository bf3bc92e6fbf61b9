"""GRPO through TRL's GRPOTrainer with edgetune's reward library (edgetune.methods.rewards).

Per-step reward mean/std per reward function, KL and completion length come from TRL's logs and reach
metrics.jsonl through the same event callback as every method (step lines carry a `reward` key). The variant
(`method.loss_type`, `method.importance_sampling_level` for GSPO, `method.scale_rewards`) is passed to TRL as is.
"""
from __future__ import annotations

from pathlib import Path

from edgetune.config import RunConfig
from edgetune.distributed import world
from edgetune.engines.base import Precision
from edgetune.errors import ConfigError
from edgetune.methods.sft import common_args


def build_trainer(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, output_dir: Path, precision: Precision,
                  callbacks: list, sink=None):
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from edgetune.events import Note, null_sink
    from edgetune.methods import rewards
    from edgetune.trl_compat import ensure_trl_runs_here

    ensure_trl_runs_here()
    m = cfg.method
    chosen = rewards.build(m.rewards, cfg)
    funcs = [rewards.guarded(r, m.on_reward_error, sink or null_sink) for r in chosen]
    args = common_args(cfg, output_dir, precision, False)
    # The batch counts completions; TRL generates batch x accumulation of them at once, in whole groups of
    # num_generations. edgetune.memory.plan chose such a batch (keeping the effective batch); say so if bypassed.
    ranks = world()[2]  # TRL generates per-device batch x accumulation x processes completions at once
    if (cfg.train.batch_size * cfg.train.grad_accum * ranks) % m.num_generations:
        raise ConfigError([(f"`train.batch_size` x `train.grad_accum` x processes = {cfg.train.batch_size} x "
                            f"{cfg.train.grad_accum} x {ranks} is not a multiple of `method.num_generations` = "
                            f"{m.num_generations}")],
                          hint="set them so their product is a multiple of it (`edgetune train` picks such a batch itself)")
    for text in variant_notes(m.loss_type, m.importance_sampling_level):
        (sink or null_sink)(Note(text, "warning"))
    config = GRPOConfig(**args, beta=m.kl_beta, num_generations=m.num_generations,
                        max_completion_length=m.max_completion_length, temperature=m.temperature,
                        reward_weights=[r.weight for r in chosen], loss_type=m.loss_type,
                        importance_sampling_level=m.importance_sampling_level,
                        scale_rewards=False if m.scale_rewards == "none" else m.scale_rewards)
    trainer = GRPOTrainer(model=model, args=config, train_dataset=train_ds, processing_class=tokenizer,
                          reward_funcs=funcs, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer


# Pairings TRL accepts but that do not do what their names promise (TRL logs these to its logger, which edgetune's
# progress does not show): said as warnings in the run's own output.
def variant_notes(loss_type: str, level: str) -> list[str]:
    notes = []
    if level == "sequence" and loss_type in ("dapo", "bnpo", "dr_grpo", "cispo"):
        notes.append(f"GRPO: sequence-level ratios with loss_type {loss_type} weight each sequence by its length; "
                     "for GSPO as published set method.loss_type = \"grpo\"")
    if loss_type == "luspo" and level != "sequence":
        notes.append("GRPO: luspo is a sequence-level loss; set method.importance_sampling_level = \"sequence\"")
    if loss_type == "vespo" and level != "token":
        notes.append("GRPO: vespo computes sequence-level weights itself; set method.importance_sampling_level = \"token\"")
    return notes
