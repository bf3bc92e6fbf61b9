"""transformers + PEFT (+ bitsandbytes 4-bit NF4) engine: runs on CUDA and on CPU."""
from __future__ import annotations

from edgetune.config import RunConfig
from edgetune.distributed import world
from edgetune.engines.base import Precision, linear_names, lora_kwargs
from edgetune.errors import ConfigError
from edgetune.models import ResolvedModel, load_error


class HFEngine:
    name = "hf"

    def load_tokenizer(self, model: ResolvedModel, cfg: RunConfig):
        from edgetune.tokenizer import load_tokenizer

        try:
            tok = load_tokenizer(model.path, revision=model.revision,
                                                trust_remote_code=cfg.model.trust_remote_code)
        except Exception as e:
            raise load_error(model.ref, e) from None
        if tok.pad_token is None:  # padding must not be EOS, or the collator would hide EOS from the loss
            tok.pad_token = tok.unk_token or tok.eos_token
        return tok

    def load_base(self, model: ResolvedModel, cfg: RunConfig, precision: Precision):
        from transformers import AutoModelForCausalLM

        kwargs = dict(revision=model.revision, trust_remote_code=cfg.model.trust_remote_code,
                      use_safetensors=True, dtype=precision.torch_dtype,
                      device_map={"": local_rank()} if precision.device == "cuda" else "cpu")
        if cfg.model.load_in_4bit:
            kwargs["quantization_config"] = bnb_config(precision.torch_dtype)
        try:
            base = AutoModelForCausalLM.from_pretrained(model.path, **kwargs)
        except Exception as e:
            raise load_error(model.ref, e) from None
        if cfg.model.load_in_4bit and precision.device == "cpu":
            keep_canonical_4bit(base)
        return base

    def load_for_training(self, model: ResolvedModel, cfg: RunConfig, precision: Precision, init_adapter=None):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        tok = self.load_tokenizer(model, cfg)
        base = self.load_base(model, cfg, precision)
        gc = cfg.train.gradient_checkpointing
        if cfg.model.load_in_4bit:
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=gc,
                                                   gradient_checkpointing_kwargs={"use_reentrant": False})
        elif gc:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        if init_adapter is not None:  # a later stage: keep training the previous stage's adapter
            from peft import PeftModel

            return PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True), tok
        missing = missing_targets(base, cfg.lora.target_modules)
        if missing:
            raise ConfigError([f"`lora.target_modules` names {', '.join(missing)}, which {model.name} does not have; "
                               f"its linear layers are: {', '.join(linear_names(base))}"])
        peft_cfg = LoraConfig(task_type="CAUSAL_LM", use_dora=cfg.lora.use_dora, **lora_kwargs(cfg, base))
        return get_peft_model(base, peft_cfg), tok


def local_rank() -> int:
    """This process's GPU: data parallel runs one process per GPU (0 in a single process)."""
    return world()[1]


def bnb_config(compute_dtype):
    """The 4-bit settings of every QLoRA run (the streaming merge rebuilds exactly these weights)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def missing_targets(model, targets) -> list[str]:
    have = set(linear_names(model))
    return [t for t in targets if t not in have and t != "all-linear"]


def keep_canonical_4bit(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its AVX512-bf16 CPU kernel on the first no-grad forward.

    That repack rewrites the weights in place (bf16 scales), so eval numerics differ from training's and a later
    dequantize reads a different layout (logits moved by up to 0.6 on a test model). Training never uses it.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
