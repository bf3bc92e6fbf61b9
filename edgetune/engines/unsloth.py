"""Unsloth engine (CUDA only): fused kernels and its own gradient checkpointing.

The engine owns the model's whole life in the process:
- Unsloth patches transformers, PEFT and TRL when imported, so it must come first: the CLI and the app import it
  before anything else when it will be used (engines.choose.preload_unsloth); a late import is reported.
- One tokenizer: the object that tokenized the data is the one the trainer collates with and the adapter saves.
  Unsloth loads its own beside the model; it must agree on the vocabulary (else training stops before step 1), and
  its pad token is adopted.
- The weights named are the weights trained: a local folder, never a hub id Unsloth could swap for its own
  pre-quantized repo (use_exact_model_name where the installed Unsloth has it).
- A later stage continues the previous adapter through Unsloth's own LoRA (get_peft_model, with its gradient
  checkpointing), loading the saved weights into it, not through plain PEFT.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from edgetune.config import RunConfig
from edgetune.engines.base import Precision, imported_before_unsloth, lora_kwargs
from edgetune.errors import TrainError
from edgetune.models import ResolvedModel, load_error, local_checkpoint


class UnslothEngine:
    name = "unsloth"

    def __init__(self):
        self.imported_first = imported_before_unsloth()  # train reports it: Unsloth could not patch these
        import unsloth  # noqa: F401  (must precede trl/transformers/peft imports)

        self._tokenizer = None

    def _load(self, model: ResolvedModel, cfg: RunConfig, precision: Precision):
        from unsloth import FastLanguageModel

        from edgetune.tokenizer import align_sentencepiece

        kwargs = dict(model_name=str(local_checkpoint(model)), max_seq_length=cfg.train.max_length,
                      dtype=precision.torch_dtype, load_in_4bit=cfg.model.load_in_4bit,
                      trust_remote_code=cfg.model.trust_remote_code)
        if "use_exact_model_name" in inspect.signature(FastLanguageModel.from_pretrained).parameters:
            kwargs["use_exact_model_name"] = True
        try:
            base, tok = FastLanguageModel.from_pretrained(**kwargs)
        except Exception as e:
            raise load_error(model.ref, e) from None
        align_sentencepiece(tok)  # tokenize as the data was checked and as llama.cpp will (edgetune.tokenizer)
        return base, tok

    def load_tokenizer(self, model: ResolvedModel, cfg: RunConfig):
        """The tokenizer that tokenizes the data; load_for_training hands this same object to the trainer."""
        from edgetune.engines.hf import HFEngine

        if self._tokenizer is None:
            self._tokenizer = HFEngine().load_tokenizer(model, cfg)  # same files; avoids loading weights twice
        return self._tokenizer

    def load_base(self, model: ResolvedModel, cfg: RunConfig, precision: Precision):
        return self._load(model, cfg, precision)[0]

    def load_for_training(self, model: ResolvedModel, cfg: RunConfig, precision: Precision, init_adapter=None):
        from unsloth import FastLanguageModel

        base, theirs = self._load(model, cfg, precision)
        tok = one_tokenizer(self.load_tokenizer(model, cfg), theirs, model.ref)
        kw = lora_kwargs(cfg, base)
        if init_adapter is not None:  # a later stage: the previous stage's LoRA settings and weights
            kw = adapter_lora_kwargs(Path(init_adapter), kw)
        peft_model = FastLanguageModel.get_peft_model(
            base, use_gradient_checkpointing="unsloth" if cfg.train.gradient_checkpointing else False,
            random_state=cfg.train.seed, max_seq_length=cfg.train.max_length, **kw)
        if init_adapter is not None:
            load_adapter_weights(peft_model, Path(init_adapter))
        return peft_model, tok


def one_tokenizer(ours, theirs, ref: str):
    """`ours` (which tokenized the data), checked against the tokenizer Unsloth loaded with the model."""
    if ours.get_vocab() != theirs.get_vocab():
        extra = sorted(set(theirs.get_vocab()) ^ set(ours.get_vocab()))[:5]
        raise TrainError(f"{ref}: Unsloth's tokenizer has a different vocabulary from the one the data was tokenized "
                         f"with ({len(theirs)} vs {len(ours)} tokens; differing: {', '.join(extra)})",
                         hint="train with --engine hf, or report the model to edgetune")
    if theirs.pad_token is not None and theirs.pad_token != ours.pad_token:
        ours.pad_token = theirs.pad_token  # what Unsloth set in the model's config
    return ours


def adapter_lora_kwargs(adapter_dir: Path, kw: dict) -> dict:
    """LoRA settings of a saved adapter, so the new LoRA layers have exactly its shapes and scaling."""
    saved = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    targets = saved.get("target_modules") or kw["target_modules"]
    return dict(kw, r=saved.get("r", kw["r"]), lora_alpha=saved.get("lora_alpha", kw["lora_alpha"]),
                target_modules=sorted(targets) if isinstance(targets, (list, set)) else targets,
                use_rslora=saved.get("use_rslora", kw["use_rslora"]))


def load_adapter_weights(peft_model, adapter_dir: Path) -> None:
    """The saved adapter's weights into the fresh LoRA layers; every LoRA weight must find its place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(peft_model, state)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise TrainError(f"{adapter_dir}: the previous stage's adapter does not fit the model Unsloth loaded "
                         f"({len(missing)} LoRA weights missing, {len(unexpected)} unexpected, e.g. "
                         f"{(missing + unexpected)[0]})",
                         hint="all stages must train the same base with the same lora settings")
