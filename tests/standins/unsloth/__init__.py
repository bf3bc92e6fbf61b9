"""A recording stand-in for `unsloth` (tests only; CPU machines cannot import the real one).

On import it notes which of the libraries Unsloth patches were already imported (the real Unsloth must come
first). FastLanguageModel loads with transformers and attaches LoRA with PEFT, and records every call, so the
Unsloth engine's wiring (tokenizer, continued adapters, exact base path) runs on a CPU. Set
UNSLOTH_STANDIN_RECORD to a file to get one JSON line per event.
"""
import json
import os
import sys

CALLS = []


def _record(event: dict) -> None:
    CALLS.append(event)
    if path := os.environ.get("UNSLOTH_STANDIN_RECORD"):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


_record({"event": "import",
         "already_imported": sorted({m.split(".")[0] for m in sys.modules} & {"transformers", "trl", "peft"})})


class FastLanguageModel:
    @staticmethod
    def from_pretrained(model_name, max_seq_length=None, dtype=None, load_in_4bit=False, trust_remote_code=False,
                        use_exact_model_name=False, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _record({"event": "from_pretrained", "model_name": str(model_name), "load_in_4bit": load_in_4bit,
                 "use_exact_model_name": use_exact_model_name, "dtype": str(dtype)})
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=dtype, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(model_name)  # a second tokenizer object, as Unsloth returns its own
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return model, tok

    @staticmethod
    def get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, target_modules=None, bias="none",
                       use_gradient_checkpointing="unsloth", random_state=3407, use_rslora=False,
                       max_seq_length=None, **kwargs):
        import torch
        from peft import LoraConfig, get_peft_model

        _record({"event": "get_peft_model", "r": r, "lora_alpha": lora_alpha, "target_modules": list(target_modules),
                 "use_rslora": use_rslora, "use_gradient_checkpointing": use_gradient_checkpointing})
        torch.manual_seed(random_state)
        return get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                target_modules=list(target_modules), bias=bias,
                                                use_rslora=use_rslora, task_type="CAUSAL_LM"))
