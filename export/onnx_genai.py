"""Make an exported ONNX folder one that onnxruntime-genai runs unchanged: og.Model(dir), og.Tokenizer, og.Generator.

What the builder leaves for us to fix (onnxruntime-genai 0.18, measured 2026-12 on SmolLM2-135M-Instruct):
- og.Tokenizer (onnxruntime-extensions) picks SentencePiece-style handling when tokenizer.json's decoder contains a
  Replace("▁" -> " ") step, and then maps every space-carrying piece of a byte-level BPE to -1 (14 of the 14 fixed
  tokenizer texts wrong). The merges-as-lists format and tokenizer_class "TokenizersBackend" of transformers 5 are read
  fine. edgetune's GGUF -> HF conversion writes that decoder (ByteFallback, Fuse, Replace ▁, ByteLevel) for
  byte-level vocabularies; for a ByteLevel pre-tokenizer those steps are no-ops (no byte-level piece holds a literal
  "▁" or a <0x..> byte token), so the decoder is written as plain ByteLevel: HF ids and text are unchanged and
  og.Tokenizer's ids equal HF's on all of FIXED_TOKENIZER_TEXTS.
- genai_config.json's eos_token_id is the config's single eos; every stop id (generation config, tokenizer eos, the
  template's end of turn) is written there, so og.Generator ends a reply where edgetune's chat does.
The chat template is read by og.Tokenizer.apply_chat_template from chat_template.jinja as copied; no change needed.
tokenizer.json is written compact (no indentation): the same JSON, 2 MB less to ship on SmolLM2.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from edgetune.atomic import atomic_write_text

_BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def _pre_tokenizer_types(node: dict | None) -> list[str]:
    from .tokenizer_json import flatten

    return [leaf.get("type") for leaf in flatten(node, "pretokenizers")]


def genai_tokenizer_json(folder: Path) -> bool:
    """Rewrite a byte-level BPE tokenizer.json's no-op SentencePiece decoder steps as plain ByteLevel; True if changed.
    The file is written without indentation either way: the merged model's copy is pretty-printed (SmolLM2's 3.5 MB,
    1.6 MB compact), and a deployment folder ships it."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    decoder = data.get("decoder") or {}
    steps = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    has_metaspace_replace = any(s.get("type") == "Replace" and s.get("pattern", {}).get("String") == "\u2581"
                                for s in steps)
    changed = "ByteLevel" in _pre_tokenizer_types(data.get("pre_tokenizer")) and has_metaspace_replace
    if changed:
        data["decoder"] = dict(_BYTE_LEVEL_DECODER)
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return changed


def genai_stop_ids(folder: Path, stop_ids: list[int]) -> None:
    """Every id that ends a reply into genai_config.json's model.eos_token_id (a list, as genai accepts)."""
    path = Path(folder) / "genai_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    eos = data["model"].get("eos_token_id")
    ids = list(dict.fromkeys([*(eos if isinstance(eos, list) else [eos] if eos is not None else []), *stop_ids]))
    data["model"]["eos_token_id"] = ids if len(ids) != 1 else ids[0]
    atomic_write_text(path, json.dumps(data, indent=4))


def make_genai_ready(folder: Path) -> None:
    """Both fixes, with the stop ids of the tokenizer files now in `folder`."""
    from edgetune.stops import stop_ids
    from edgetune.tokenizer import load_tokenizer

    genai_tokenizer_json(folder)
    genai_stop_ids(folder, stop_ids(load_tokenizer(folder), folder))


def genai_token_mismatches(folder: Path, texts: list[str], hf_ids) -> list[dict]:
    """og.Tokenizer's ids against `hf_ids(text)` (the merged model's tokenizer) on each text."""
    import onnxruntime_genai as og

    tokenizer = og.Tokenizer(og.Model(str(folder)))
    out = []
    for text in texts:
        ours, hf = [int(i) for i in tokenizer.encode(text)], list(hf_ids(text))
        if ours != hf:
            out.append({"text": text, "hf": hf, "genai": ours})
    return out


def genai_greedy(folder: Path, prompt_ids: list[int], max_new_tokens: int, model=None) -> Iterator[int]:
    """og.Generator's greedy continuation of `prompt_ids` (no repeat penalty), token by token; the last one is the
    eos id of genai_config that ended it, if one did."""
    import onnxruntime_genai as og

    model = model or og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + max_new_tokens, repetition_penalty=1.0)
    generator = og.Generator(model, params)
    generator.append_tokens(list(prompt_ids))
    while not generator.is_done():
        generator.generate_next_token()
        yield int(generator.get_next_tokens()[0])
