"""Which tokens end a reply: one answer for every runtime (HF generate, llama.cpp, ONNX, the Ollama Modelfile).

A model stops at any of: the ids in generation_config.json's `eos_token_id` (often a list: Llama 3 ends turns with
<|eot_id|> but documents with <|end_of_text|>; Gemma 3's tokenizer eos is <eos> while turns end with <end_of_turn>),
the tokenizer's eos token, and the token its chat template writes after an assistant reply. Passing only
`tokenizer.eos_token_id` to `generate` replaces that list, and Gemma's replies then run to max_tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

_MARKER = "XQZMARKERQZX"


def generation_eos_ids(model_dir) -> list[int]:
    """`eos_token_id` of generation_config.json (else config.json) in model_dir, as a list; [] when absent."""
    if model_dir is None:
        return []
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cfg = {**cfg.get("text_config", {}), **cfg}
        value = cfg.get("eos_token_id")
        ids = value if isinstance(value, list) else [value]
        ids = [i for i in ids if isinstance(i, int)]
        if ids:
            return ids
    return []


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant reply (<|im_end|>, <|eot_id|>,
    <end_of_turn>, <|end|>, </s>, ...); None without a template or when a plain-text marker ends turns."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARKER}], tokenize=False)
    except Exception:  # noqa: BLE001 - no template, or one that needs more than a user/assistant pair
        return None
    after = text[text.rfind(_MARKER) + len(_MARKER):].lstrip()
    if not after:
        return None
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(tokenizer.get_added_vocab().values())
    return tokenizer.convert_ids_to_tokens(ids[0]) if ids[0] in special else None


def stop_ids(tokenizer, model_dir=None, model=None) -> list[int]:
    """Every id that ends a reply, in a stable order: generation config (of `model` when given, else read from
    model_dir or the tokenizer's folder), tokenizer eos, template end-of-turn."""
    found: list[int] = []
    eot = end_of_turn_token(tokenizer)
    config = getattr(model, "generation_config", None)
    from_model = getattr(config, "eos_token_id", None) if config is not None else None
    from_model = from_model if isinstance(from_model, list) else [from_model]
    candidates = [*from_model,
                  *generation_eos_ids(model_dir if model_dir is not None else getattr(tokenizer, "name_or_path", None)),
                  tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(eot) if eot else None]
    for i in candidates:
        if isinstance(i, int) and i >= 0 and i not in found:
            found.append(i)
    return found


def stop_tokens(tokenizer, model_dir=None) -> list[str]:
    """stop_ids as token strings (for runtimes configured by text, like Ollama's `PARAMETER stop`)."""
    return [tokenizer.convert_ids_to_tokens(i) for i in stop_ids(tokenizer, model_dir)]
