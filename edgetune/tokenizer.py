"""Load a model's tokenizer the one way every stage uses (training, merge, export, verify, chat, eval).

transformers 5 rebuilds SentencePiece-style Llama tokenizers (Llama 2, Mistral v0.x, Phi-3.5) with a Metaspace
pre-tokenizer that skips the "▁" prefix when a piece already starts with a space, whatever their tokenizer.json
says. SentencePiece itself, the models' own tokenizer.json (a Prepend("▁") normalizer) and llama.cpp always add it:
" Hi" after "[INST]" is "▁▁Hi" there and "▁Hi" in transformers 5. Training with one and chatting with the other
shifts every turn, so edgetune puts the SentencePiece behaviour back: training, HF chat and the GGUF then agree.
"""
from __future__ import annotations


def load_tokenizer(path, **kwargs):
    """AutoTokenizer.from_pretrained(path, **kwargs), with SentencePiece tokenization made exact."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **kwargs)
    align_sentencepiece(tok)
    return tok


def align_sentencepiece(tok) -> bool:
    """Give a Metaspace-prefixing SentencePiece BPE tokenizer the always-prepend normalizer; True when changed."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return False
    pre = backend.pre_tokenizer
    model = backend.model
    if type(pre).__name__ != "Metaspace" or type(model).__name__ != "BPE" or not getattr(model, "byte_fallback", False):
        return False
    if getattr(pre, "prepend_scheme", "always") == "never" or getattr(pre, "split", False):
        return False
    from tokenizers import normalizers

    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None
    return True
