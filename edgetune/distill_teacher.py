"""The teacher of `edgetune distill`: one `generate` over llama.cpp (a .gguf file) or transformers (an HF folder, a
hub id in the local cache, a run directory: its merged model or base + adapter), loaded the way `edgetune chat` loads
them, with the sampling settings passed per call (temperature, top-p, repetition penalty, a seed per row).

`generate` returns (text, finish_reason, completion tokens); finish_reason is "stop", "length" (cut off at
max_tokens) or "context" (the prompt alone does not fit the teacher's context).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgetune.errors import ConfigError, ModelError
from edgetune.events import Note, null_sink

BACKENDS = ("auto", "llamacpp", "hf")


@dataclass
class Teacher:
    label: str  # what each row records as its teacher: the resolved file or folder (+ adapter)
    backend: str
    n_ctx: int
    generate: Callable  # (messages, Sampling, seed) -> (text, finish_reason, completion tokens)
    close: Callable


def load_teacher(ref: str, backend: str = "auto", n_ctx: int = 4096, sink=null_sink) -> Teacher:
    from edgetune.chat import resolve_target

    if backend not in BACKENDS:
        raise ConfigError([f"--backend {backend!r} is not a teacher backend"], hint="use auto, llamacpp or hf")
    if ref == "default" and backend != "hf":  # the embedded model is a GGUF: llama.cpp runs it without a conversion
        from edgetune.models import default_gguf_path

        kind, path, adapter = "llamacpp", default_gguf_path(), None
    else:
        kind, path, adapter = resolve_target(ref, backend)
    if kind == "onnx":
        raise ModelError(f"{ref}: an ONNX export cannot be a distillation teacher",
                         hint="pass the run directory, its merged/ folder or a .gguf file")
    label = str(Path(path).resolve()) + (f" + {Path(adapter).resolve()}" if adapter else "")
    sink(Note(f"teacher: {label} ({kind})"))
    if kind == "llamacpp":
        return _llamacpp(Path(path), label, n_ctx)
    return _hf(Path(path), adapter, label)


def _llamacpp(path: Path, label: str, n_ctx: int) -> Teacher:
    from edgetune.chat import LlamaCppBackend

    # every layer on the GPU when the llama.cpp build has one; a CPU build ignores it
    backend = LlamaCppBackend(path, n_ctx=n_ctx, n_gpu_layers=-1)
    llm = backend.llm

    def generate(messages, s, seed):
        try:
            out = llm.create_chat_completion(messages=messages, max_tokens=s.max_tokens, temperature=s.temperature,
                                             top_p=s.top_p, repeat_penalty=s.repeat_penalty, seed=seed)
        except ValueError as e:  # llama-cpp-python checks the prompt length only when generation starts
            if "exceed context window" in str(e):
                return "", "context", 0
            raise
        choice = out["choices"][0]
        return choice["message"].get("content") or "", choice.get("finish_reason") or "stop", out["usage"]["completion_tokens"]

    return Teacher(label, "llamacpp", llm.n_ctx(), generate, llm.close)


def _hf(path: Path, adapter: Path | None, label: str) -> Teacher:
    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.chat import HFBackend
    from edgetune.tokenizer import load_tokenizer

    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                     device_map="cuda" if cuda else "cpu")
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
    except Exception as e:
        from edgetune.models import load_error

        raise load_error(str(path), e) from None
    model.eval()
    hf = HFBackend(model, load_tokenizer(adapter or path))
    tok = hf.tokenizer
    limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30

    def generate(messages, s, seed):
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        n_prompt = enc["input_ids"].shape[1]
        if n_prompt >= limit:
            return "", "context", 0
        enc = {k: v.to(model.device) for k, v in enc.items()}
        kwargs = dict(max_new_tokens=min(s.max_tokens, limit - n_prompt), eos_token_id=hf.stop_ids,
                      pad_token_id=tok.pad_token_id, repetition_penalty=s.repeat_penalty)
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.no_grad():
            new = model.generate(**enc, **kwargs)[0, n_prompt:]
        stopped = len(new) > 0 and int(new[-1]) in hf.stop_ids
        return tok.decode(new, skip_special_tokens=True), "stop" if stopped else "length", len(new)

    return Teacher(label, "hf", int(min(limit, 1 << 30)), generate, lambda: None)
