"""A Hugging Face tokenizer rebuilt from a GGUF's SentencePiece vocabulary (tokenizer.ggml.model = "llama").

transformers 5.17 reads such a vocabulary (Gemma 3's, Llama 2's) without BPE merges and without its control tokens:
google/gemma-3-270m's GGUF then tokenizes "Hi" as "H", "i" and "<end_of_turn>" as 13 characters, so a model
fine-tuned from it would learn from text it was never trained on and never learn to stop. Here the vocabulary becomes
what SentencePiece does: BPE merges ranked by the score of the piece they make (transformers' own
SentencePiece extractor), byte fallback, "▁" for spaces, control and user-defined pieces as added tokens, BOS as the
GGUF says. The tests compare it with llama.cpp tokenizing the same GGUF.
"""
from __future__ import annotations

from pathlib import Path

import gguf

CONTROL, USER_DEFINED, BYTE, UNKNOWN = (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED, gguf.TokenType.BYTE,
                                        gguf.TokenType.UNKNOWN)


def _field(fields, key, default=None):
    return fields[key].contents() if key in fields else default


def sentencepiece_tokenizer(path: Path):
    """A PreTrainedTokenizerFast equivalent to the GGUF's SentencePiece vocabulary, or None for other kinds."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import generate_merges

    fields = gguf.GGUFReader(str(path)).fields
    if _field(fields, "tokenizer.ggml.model") != "llama":
        return None
    pieces = _field(fields, "tokenizer.ggml.tokens")
    scores = _field(fields, "tokenizer.ggml.scores")
    types = _field(fields, "tokenizer.ggml.token_type")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    mergeable = {p: s for p, s, t in zip(pieces, scores, types) if t not in (CONTROL, USER_DEFINED, BYTE, UNKNOWN)}
    unk = next((p for p, t in zip(pieces, types) if t == UNKNOWN), None)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=generate_merges(vocab, mergeable), unk_token=unk,
                                   fuse_unk=True, byte_fallback=True))
    prefix = bool(_field(fields, "tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("\u2581")] if prefix else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "\u2581")])
    decode = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence(decode + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    backend.add_special_tokens([AddedToken(p, special=t == CONTROL, normalized=False)
                                for p, t in zip(pieces, types) if t in (CONTROL, USER_DEFINED)])

    def token(key):
        i = _field(fields, f"tokenizer.ggml.{key}_token_id")
        return pieces[i] if i is not None and 0 <= i < len(pieces) else None

    bos = token("bos")
    if _field(fields, "tokenizer.ggml.add_bos_token", False) and bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=token("eos"),
                                   unk_token=token("unknown"), pad_token=token("padding"),
                                   chat_template=_field(fields, "tokenizer.chat_template"))
