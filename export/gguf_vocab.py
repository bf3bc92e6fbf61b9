"""Tokenizer metadata for GGUF: byte-level BPE vocab, merges, pre-tokenizer name, special tokens, chat template;
SentencePiece-style tokenizers go through gguf_vocab_spm.py.

llama.cpp re-implements each BPE pre-tokenizer (the regex that splits text before merges) under a name stored in
`tokenizer.ggml.pre`. Like llama.cpp's own converter we identify it by hashing the tokenizer's ids on a fixed text;
a tokenizer we have no hash for (a custom or retrained one) is identified by the shape of its tokenizer.json instead.
Reads tokenizer files with the `tokenizers` library only (no transformers import: that alone costs seconds).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import gguf

from edgetune.errors import ExportError

from .tokenizer_json import flatten

# llama.cpp's probe text (convert_hf_to_gguf.py, get_vocab_base_pre): whitespace runs, digits, emoji, scripts, quotes.
CHECK_TEXT = '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'

# sha256(str(ids of CHECK_TEXT)) -> llama.cpp pre-tokenizer name, for the families a small-model kit meets.
# Values copied from llama.cpp's converter (llama-cpp-python 0.3.36); the comment names the reference tokenizer.
KNOWN_PRE_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",  # Smaug-Llama-3-70B-Instruct
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",  # Llama-4-Scout-17B-16E-Instruct
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen/Qwen1.5-7B
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen/Qwen3-Embedding-0.6B
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",  # R1-Distill-Qwen-1.5B
    "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4": "qwen35",  # Qwen/Qwen3.5-9B-Instruct
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # mistralai/Mistral-Nemo-Base-2407
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",  # mistral-community/pixtral-12b
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",  # microsoft/phi-2
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",  # Xenova/gpt-4o
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",  # tiiuae/Falcon3-7B-Base
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",  # deepseek-llm-7b-base
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",  # deepseek-coder-6.7b-base
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",  # deepseek-ai/DeepSeek-V3
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",  # bigcode/starcoder2-3b
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",  # stablelm-2-zephyr-1_6b
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",  # allenai/OLMo-1.7-7B-hf
    "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb": "exaone4",  # LGAI-EXAONE/EXAONE-4.0-32B
}

# Split regexes as tokenizer.json spells them, for recognising a retrained tokenizer of a known family.
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# o200k (GPT-4o): Phi-4-mini, gpt-oss
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# Tokens that end an assistant turn in common chat templates; llama.cpp stops generation at the EOT token.
_TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class VocabSummary:
    pre: str
    pre_source: str  # "hash" | "structure"
    n_tokens: int
    n_merges: int
    special: dict[str, int]
    add_bos: bool
    has_chat_template: bool
    warnings: list[str]


def write_vocab(writer: gguf.GGUFWriter, model_dir: Path, n_vocab: int) -> VocabSummary:
    """Add the tokenizer in model_dir to `writer` (padded to the model's n_vocab rows): byte-level BPE as llama.cpp's
    `gpt2` vocabulary, SentencePiece-style BPE (byte fallback, "▁" for spaces) as its `llama` vocabulary."""
    from tokenizers import Tokenizer

    from .gguf_vocab_spm import add_space_prefix, is_sentencepiece_bpe, spm_vocab

    tok_json_path = model_dir / "tokenizer.json"
    if not tok_json_path.is_file():
        raise ExportError(f"{model_dir}: no tokenizer.json",
                          hint="save the tokenizer next to the model (tokenizer.save_pretrained(dir) writes it)")
    tok_json = json.loads(tok_json_path.read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_str(json.dumps(tok_json))
    tok_config = _read_json(model_dir / "tokenizer_config.json")
    spm = is_sentencepiece_bpe(tok_json)
    if spm:
        tokens, scores, toktypes = spm_vocab(tokenizer, tok_json, n_vocab)
        _check_fits(tokenizer, n_vocab, tok_json_path)
        pre, pre_source = "default", "sentencepiece"
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(toktypes)
        writer.add_add_space_prefix(add_space_prefix(tok_json))
    else:
        _require_byte_level_bpe(tok_json, tok_json_path)
        tokens, toktypes = _token_list(tokenizer, tok_json, n_vocab, tok_json_path)
        pre, pre_source = detect_pre(tokenizer, tok_json)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(toktypes)

    special = gguf.SpecialVocab(model_dir, load_merges=not spm, n_vocab=n_vocab)
    warnings = _fix_special_tokens(special, model_dir, tokens, tokenizer, tok_config) + _runtime_differences(tok_json, pre)
    special.add_to_gguf(writer, quiet=True)
    return VocabSummary(pre=pre, pre_source=pre_source, n_tokens=len(tokens), n_merges=len(special.merges),
                        special=dict(special.special_token_ids), add_bos=special.add_special_token.get("bos", False),
                        has_chat_template=special.chat_template is not None, warnings=warnings)


def detect_pre(tokenizer, tok_json: dict) -> tuple[str, str]:
    """The llama.cpp pre-tokenizer name: by llama.cpp's id hash, else by tokenizer.json's pre_tokenizer shape."""
    with_special = tokenizer.encode(CHECK_TEXT, add_special_tokens=True).ids
    plain = tokenizer.encode(CHECK_TEXT, add_special_tokens=False).ids
    bos = _bos_id(tok_json)
    # llama.cpp hashed transformers' encode(), which adds BOS for some families; try the spellings it could be.
    for ids in (with_special, plain, [bos, *plain] if bos is not None else plain):
        name = KNOWN_PRE_HASHES.get(sha256(str(ids).encode()).hexdigest())
        if name:
            return name, "hash"
    name = _pre_from_structure(tok_json)
    if name:
        return name, "structure"
    digest = sha256(str(with_special).encode()).hexdigest()
    raise ExportError(
        f"unrecognised BPE pre-tokenizer (hash {digest[:16]}…, pre_tokenizer "
        f"{json.dumps(tok_json.get('pre_tokenizer'))[:200]})",
        hint="llama.cpp needs to know how this tokenizer splits text; use a tokenizer of a supported family "
             "(Llama 3, Qwen2, SmolLM, GPT-2 byte-level) or convert with llama.cpp's convert_hf_to_gguf.py")


def _pre_from_structure(tok_json: dict) -> str | None:
    if any(n.get("type") != "NFC" for n in _normalizers(tok_json.get("normalizer"))):
        # a normalizer changes the text before splitting: no llama.cpp pre-type to match blindly. NFC alone is the
        # Qwen tokenizers' (transformers 5's Qwen2Tokenizer adds it on save); its one effect is a documented warning
        return None
    steps = flatten(tok_json.get("pre_tokenizer"), "pretokenizers")
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        return {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2", _GPT4O_SPLIT: "gpt-4o"}.get(regex)
    return None


def _check_fits(tokenizer, n_vocab: int, where: Path) -> None:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if vocab and max(vocab.values()) >= n_vocab:
        raise ExportError(f"{where}: token id {max(vocab.values())} does not fit the model's vocab_size {n_vocab}",
                          hint="resize the model's embeddings to the tokenizer (model.resize_token_embeddings) "
                               "before saving")


def _token_list(tokenizer, tok_json: dict, n_vocab: int, where: Path) -> tuple[list[str], list[int]]:
    _check_fits(tokenizer, n_vocab, where)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:  # embedding rows beyond the tokenizer (padded vocab): unused placeholders
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = by_id[i]
        if i in added:
            if added[i].get("special") or _looks_special(text):
                types.append(gguf.TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")  # user-defined tokens are matched as plain text by llama.cpp
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def _fix_special_tokens(special: gguf.SpecialVocab, model_dir: Path, tokens: list[str], tokenizer,
                        tok_config: dict) -> list[str]:
    """Fill the gaps gguf.SpecialVocab leaves: a sane EOS, the EOT token, and add_bos as the tokenizer behaves."""
    warnings: list[str] = []
    ids = special.special_token_ids
    config = _read_json(model_dir / "config.json")
    gen = _read_json(model_dir / "generation_config.json")
    stop_ids = _as_list(gen.get("eos_token_id")) or _as_list(config.get("eos_token_id"))
    # An EOS equal to BOS cannot end a reply (seen in tokenizers rebuilt from GGUF): trust the model's stop ids.
    if stop_ids and ids.get("eos") is not None and ids.get("eos") == ids.get("bos") and stop_ids[0] != ids["eos"]:
        warnings.append(f"tokenizer eos {tokens[ids['eos']]!r} equals bos; using generation eos "
                        f"{tokens[stop_ids[0]]!r} from the model config")
        ids["eos"] = stop_ids[0]
    elif "eos" not in ids and stop_ids:
        ids["eos"] = stop_ids[0]
    template = special.chat_template if isinstance(special.chat_template, str) else ""
    for text in _TURN_END_TOKENS:
        if text in template and text in tokens:
            ids["eot"] = tokens.index(text)
            break
    if not isinstance(tok_config.get("add_bos_token"), bool):
        # Whatever tokenizer.json's post-processor does is what HF does: llama.cpp must add BOS exactly then.
        probe_with = tokenizer.encode("a", add_special_tokens=True).ids
        probe_plain = tokenizer.encode("a", add_special_tokens=False).ids
        special.add_special_token["bos"] = len(probe_with) > len(probe_plain) and probe_with[0] == ids.get("bos")
    if special.add_special_token.get("bos") and "bos" not in ids:
        warnings.append("tokenizer adds a BOS token but none is named; llama.cpp will not add one")
        special.add_special_token["bos"] = False
    return warnings


def _runtime_differences(tok_json: dict, pre: str) -> list[str]:
    """Where llama.cpp's tokenizer is known to differ from Hugging Face's for this tokenizer (plan warnings)."""
    out = []
    if any(n.get("type") in ("NFC", "NFKC") for n in flatten(tok_json.get("normalizer"), "normalizers")):
        out.append("the tokenizer applies Unicode NFC normalization and llama.cpp does not: text in decomposed form "
                   "(e.g. 'e' + U+0301) tokenizes differently; composed text (nearly all text) is identical")
    if pre == "gpt-4o":
        out.append("llama.cpp's gpt-4o pre-tokenizer splits combining marks (\\p{M}, e.g. in Khmer) differently from "
                   "Hugging Face's regex; other text tokenizes identically")
    return out


def _require_byte_level_bpe(tok_json: dict, where: Path) -> None:
    model_type = (tok_json.get("model") or {}).get("type")
    byte_level = any(s.get("type") == "ByteLevel" for s in flatten(tok_json.get("pre_tokenizer"), "pretokenizers"))
    if model_type != "BPE" or not byte_level:
        raise ExportError(
            f"{where}: tokenizer is {model_type} without a byte-level pre-tokenizer or SentencePiece-style byte "
            "fallback; edgetune exports byte-level BPE (Llama 3, Qwen, SmolLM, Phi-4) and SentencePiece BPE "
            "(Gemma, Llama 2, Mistral v0.x, Phi-3.5) tokenizers",
            hint="Unigram and WordPiece tokenizers need llama.cpp's convert_hf_to_gguf.py")


def _bos_id(tok_json: dict) -> int | None:
    for step in flatten(tok_json.get("post_processor"), "processors"):
        for item in step.get("single", [])[:1]:
            if "SpecialToken" in item:
                name = item["SpecialToken"]["id"]
                return next((a["id"] for a in tok_json.get("added_tokens", []) if a["content"] == name), None)
    return None


def _looks_special(text: str) -> bool:
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>")


def _normalizers(node: dict | None) -> list[dict]:
    return flatten(node, "normalizers")


def _as_list(value) -> list[int]:
    if isinstance(value, int):
        return [value]
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
