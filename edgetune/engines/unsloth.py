"""Unsloth engine (CUDA only): fused kernels and its own gradient checkpointing.

Unsloth patches transformers, PEFT and TRL when imported, so it is imported here, before any of those load in
train.py (engine selection happens first).
"""
from __future__ import annotations

from edgetune.config import RunConfig
from edgetune.engines.base import Precision, lora_kwargs
from edgetune.models import ResolvedModel, load_error


class UnslothEngine:
    name = "unsloth"

    def __init__(self):
        import unsloth  # noqa: F401  (must precede trl/transformers/peft imports)

    def _load(self, model: ResolvedModel, cfg: RunConfig, precision: Precision):
        from unsloth import FastLanguageModel

        from edgetune.tokenizer import align_sentencepiece

        try:
            base, tok = FastLanguageModel.from_pretrained(
                model_name=model.path, max_seq_length=cfg.train.max_length, dtype=precision.torch_dtype,
                load_in_4bit=cfg.model.load_in_4bit, revision=model.revision,
                trust_remote_code=cfg.model.trust_remote_code)
        except Exception as e:
            raise load_error(model.ref, e) from None
        align_sentencepiece(tok)  # tokenize as the data was checked and as llama.cpp will (edgetune.tokenizer)
        return base, tok

    def load_tokenizer(self, model: ResolvedModel, cfg: RunConfig):
        from edgetune.engines.hf import HFEngine

        return HFEngine().load_tokenizer(model, cfg)  # same files; avoids loading weights twice

    def load_base(self, model: ResolvedModel, cfg: RunConfig, precision: Precision):
        return self._load(model, cfg, precision)[0]

    def load_for_training(self, model: ResolvedModel, cfg: RunConfig, precision: Precision, init_adapter=None):
        from unsloth import FastLanguageModel

        base, tok = self._load(model, cfg, precision)
        if init_adapter is not None:  # a later stage: keep training the previous stage's adapter
            from peft import PeftModel

            if tok.pad_token is None:
                tok.pad_token = tok.unk_token or tok.eos_token
            return PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True), tok
        kw = lora_kwargs(cfg, base)
        peft_model = FastLanguageModel.get_peft_model(
            base, use_gradient_checkpointing="unsloth" if cfg.train.gradient_checkpointing else False,
            random_state=cfg.train.seed, max_seq_length=cfg.train.max_length, **kw)
        if tok.pad_token is None:
            tok.pad_token = tok.unk_token or tok.eos_token
        return peft_model, tok
