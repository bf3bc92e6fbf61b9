"""SentencePiece-style tokenizers (Gemma, Llama 2, Mistral v0.x, Phi-3.5) as llama.cpp's `llama` (SPM) vocabulary.

transformers 5 saves these as tokenizer.json: a BPE model with byte fallback (<0xNN> tokens) over text whose spaces
become "▁". llama.cpp's SPM tokenizer merges the adjacent pair whose joined piece has the highest score, which is
how SentencePiece BPE itself works, so each piece's score is minus the rank of the merge that produces it (the first
merge scores highest). llama.cpp's own LlamaHfVocab gives every piece the same score instead, which changes the
merge order; llama.cpp's tokenizer tests (tests/unit/test_gguf_tokenizers.py) check the result against Hugging Face.
"""
from __future__ import annotations

import re

import gguf

from .tokenizer_json import flatten

_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_NO_MERGE = -1e9  # pieces no merge produces (single characters, bytes, specials): never chosen by score


def is_sentencepiece_bpe(tok_json: dict) -> bool:
    model = tok_json.get("model") or {}
    return model.get("type") == "BPE" and bool(model.get("byte_fallback")) and not _has_byte_level(tok_json)


def _has_byte_level(tok_json: dict) -> bool:
    return any(s.get("type") == "ByteLevel" for s in flatten(tok_json.get("pre_tokenizer"), "pretokenizers"))


def add_space_prefix(tok_json: dict) -> bool:
    """Whether the tokenizer puts "▁" before the text (Llama 2 / Mistral: yes; Gemma: no)."""
    for step in flatten(tok_json.get("normalizer"), "normalizers"):
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
    for step in flatten(tok_json.get("pre_tokenizer"), "pretokenizers"):
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never") != "never"
    return False


def merge_scores(tok_json: dict) -> dict[str, float]:
    """piece -> score: minus the rank of the first merge that produces it."""
    scores: dict[str, float] = {}
    for rank, merge in enumerate(tok_json["model"].get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -float(rank))
    return scores


def spm_vocab(tokenizer, tok_json: dict, n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """(pieces, scores, token types) for ids 0..n_vocab-1; ids past the tokenizer are unused padding rows."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
    unk = tok_json["model"].get("unk_token")
    scores = merge_scores(tok_json)
    pieces, piece_scores, types = [], [], []
    for i in range(n_vocab):
        piece = by_id.get(i)
        if piece is None:
            pieces.append(f"[PAD{i}]")
            piece_scores.append(_NO_MERGE)
            types.append(gguf.TokenType.UNUSED)
            continue
        if i in added and piece != unk:
            kind = gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
        elif piece == unk:
            kind = gguf.TokenType.UNKNOWN
        elif _BYTE.fullmatch(piece):
            kind = gguf.TokenType.BYTE
        else:
            kind = gguf.TokenType.NORMAL
        pieces.append(piece)
        piece_scores.append(scores.get(piece, _NO_MERGE) if kind == gguf.TokenType.NORMAL else 0.0)
        types.append(kind)
    return pieces, piece_scores, types
