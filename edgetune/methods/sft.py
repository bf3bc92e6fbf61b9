"""Supervised fine-tuning through TRL's SFTTrainer on our pre-tokenized, assistant-masked dataset (continued
pretraining too: edgetune.cpt packs raw text into blocks whose labels are every token)."""
from __future__ import annotations

from pathlib import Path

from edgetune.config import RunConfig
from edgetune.distributed import trainer_kwargs
from edgetune.engines.base import Precision


def common_args(cfg: RunConfig, output_dir: Path, precision: Precision, has_eval: bool) -> dict:
    """Trainer arguments every method shares, spelled out so every default that matters is chosen on purpose."""
    t = cfg.train
    optim = t.optimizer
    if optim == "auto":  # paged 8-bit AdamW needs bitsandbytes' CUDA kernels; plain AdamW elsewhere
        optim = "paged_adamw_8bit" if precision.device == "cuda" else "adamw_torch"
    return dict(
        output_dir=str(output_dir),
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        optim=optim,
        seed=t.seed,
        gradient_checkpointing=False,  # the engine enables it (Unsloth uses its own offloaded variant)
        bf16=precision.name == "bf16",
        fp16=precision.name == "fp16",
        use_cpu=precision.device == "cpu",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.save_steps if has_eval else None,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,  # progress is ours (events), not tqdm's
        dataloader_num_workers=0,
        **trainer_kwargs(cfg),  # DDP / FSDP settings when launched on several processes
    )


def training_args(cfg: RunConfig, output_dir: Path, precision: Precision, has_eval: bool):
    from trl import SFTConfig

    return SFTConfig(**common_args(cfg, output_dir, precision, has_eval), max_length=cfg.train.max_length,
                     packing=cfg.train.packing and cfg.method.name != "cpt",  # cpt blocks come packed
                     # the loss mask comes from our own template pass (edgetune.data.template) as a `labels` column
                     # (-100 outside replies). TRL keeps it as it is and pads it with -100; Unsloth's replacement
                     # dataset preparation collates a `labels` column with DataCollatorForSeq2Seq (-100 padding too)
                     # but would train every token of a dataset with mask columns only
                     assistant_only_loss=False, dataset_num_proc=None)


def fused_loss_available() -> bool:
    """TRL 1.15 computes the SFT loss with a Triton kernel (fused LM head). The CPU torch wheel has no Triton, and
    the kernel's backward needs a GPU anyway, so there TRL's own loss path raises; use the model's loss instead."""
    import torch
    from trl.trainer import utils as trl_utils

    return torch.cuda.is_available() and getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None


def trainer_class():
    from transformers import Trainer
    from trl import SFTTrainer

    if fused_loss_available():
        return SFTTrainer

    class SFTTrainerUnfused(SFTTrainer):
        """SFTTrainer with the standard causal-LM loss (same value; no token-accuracy/entropy metrics)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return SFTTrainerUnfused


def build_trainer(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, output_dir: Path, precision: Precision,
                  callbacks: list):
    from transformers.trainer_callback import PrinterCallback

    args = training_args(cfg, output_dir, precision, eval_ds is not None)
    trainer = trainer_class()(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                              processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # progress is rendered from our events
    return trainer
