"""DPO and KTO through TRL's DPOTrainer / KTOTrainer. The reference model is the same weights with the adapter off
(PEFT), so preference tuning costs no second copy of the model."""
from __future__ import annotations

from pathlib import Path

from edgetune.config import RunConfig
from edgetune.engines.base import Precision
from edgetune.methods.sft import common_args


def build_trainer(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, output_dir: Path, precision: Precision,
                  callbacks: list):
    from transformers.trainer_callback import PrinterCallback

    from edgetune.trl_compat import ensure_trl_runs_here

    ensure_trl_runs_here()
    args = common_args(cfg, output_dir, precision, eval_ds is not None)
    if cfg.method.name == "dpo":
        from trl import DPOConfig as Config, DPOTrainer as Trainer
    else:
        from trl import KTOConfig as Config, KTOTrainer as Trainer
    config = Config(**args, beta=cfg.method.beta, max_length=cfg.train.max_length)
    trainer = Trainer(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer
