"""llama.cpp's own tokenizer tests (models/ggml-vocab-*.gguf.inp/.out in its source) on GGUF vocabularies that
edgetune writes from real tokenizers (Qwen3, Llama 3.1, Gemma 3, Llama 2, gpt-oss; fetched by tests/fetch_assets.py).

Where llama.cpp's reference is the same vocabulary, llama.cpp's ids on our file must equal the reference ids of
its .out file; for every tokenizer they must equal the Hugging Face tokenizer's ids (as edgetune loads it) on every
.inp text of every test file, and on the fixed special-token / emoji / code set the export gate uses.
"""
from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import gguf
import llama_cpp
import pytest

from edgetune.export import verify
from edgetune.export.gguf_convert import write_gguf_atomically
from edgetune.export.gguf_vocab import write_vocab
from edgetune.tokenizer import load_tokenizer
from fetched import require_asset

# tokenizer -> (the llama.cpp architecture to label it with, llama.cpp's reference test of the same vocabulary).
# The npm "llama2" package holds Mistral 7B's 32,000-piece SentencePiece vocabulary (not Meta's Llama 2 ids), so it
# has no llama.cpp reference file of its own; it is compared with Hugging Face like the others.
TOKENIZERS = {"qwen3": ("qwen3", "qwen2"), "llama3_1": ("llama", "llama-bpe"), "llama2": ("llama", None),
              "gemma3": ("gemma3", None), "gptoss": ("llama", None)}
VOCAB_TESTS = ("llama-bpe", "qwen2", "qwen35", "llama-spm", "phi-3", "gpt-2", "gemma-4")


def read_vocab_test(name: str) -> list[tuple[str, list[int]]]:
    """(text, reference ids) pairs of llama.cpp's models/ggml-vocab-NAME.gguf.inp/.out."""
    folder = require_asset("llama.cpp/vocab")
    texts = (folder / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outs = (folder / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    texts = texts[:-1] if texts and texts[-1].strip() == "" else texts
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


def all_test_texts() -> list[str]:
    seen: dict[str, None] = {}
    for name in VOCAB_TESTS:
        for text, _ in read_vocab_test(name):
            seen.setdefault(text)
    return list(seen) + list(verify.FIXED_TOKENIZER_TEXTS)


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def vocab_gguf(request, tmp_path_factory):
    """(name, HF tokenizer, llama.cpp vocab-only model) for a GGUF holding only edgetune's vocabulary."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    for file in require_asset(f"tokenizers/{name}").iterdir():
        shutil.copy(file, folder / file.name)
    tok = load_tokenizer(folder)
    n_vocab = len(tok)
    (folder / "config.json").write_text(json.dumps({"eos_token_id": tok.eos_token_id}), encoding="utf-8")
    arch = TOKENIZERS[name][0]
    writer = gguf.GGUFWriter(path=None, arch=arch)
    for key, value in (("block_count", 1), ("context_length", 4096), ("embedding_length", 64),
                       ("feed_forward_length", 128), ("head_count", 4)):
        getattr(writer, f"add_{key}")(value)
    writer.add_layer_norm_rms_eps(1e-6)
    write_vocab(writer, folder, n_vocab=n_vocab)
    path = folder / "vocab.gguf"
    write_gguf_atomically(writer, path, writer.write_tensors_to_file)
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    yield name, tok, llm
    llm.close()


def test_llama_cpp_reference_ids_of_the_same_vocabulary(vocab_gguf):
    name, _, llm = vocab_gguf
    reference = TOKENIZERS[name][1]
    if reference is None:
        return  # no llama.cpp reference test of this vocabulary; the HF comparison below covers it
    cases = read_vocab_test(reference)
    wrong = [(t, ids) for t, ids in cases if llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) != ids]
    assert not wrong, f"{len(wrong)} of {len(cases)} llama.cpp reference texts differ, e.g. {wrong[0][0]!r}"


def test_ids_equal_the_hugging_face_tokenizer_on_every_test_text(vocab_gguf):
    """Identical ids, except two documented llama.cpp behaviours that the export plan warns about, each asserted to
    be exactly that and nothing else: no Unicode NFC normalization (Qwen's tokenizer normalizes; text already in NFC
    is identical), and the gpt-4o (o200k: Phi-4-mini, gpt-oss) regex splitting combining marks differently (llama.cpp's
    exact variant, pre "granite-embed-multi-97m", is unknown to older runtimes such as Ollama, so edgetune writes
    "gpt-4o" as llama.cpp's own converter does)."""
    name, tok, llm = vocab_gguf
    normalizer = json.loads((Path(tok.name_or_path) / "tokenizer.json").read_text(encoding="utf-8"))["normalizer"]
    nfc = '"NFC"' in json.dumps(normalizer)
    pre = llm.metadata.get("tokenizer.ggml.pre")
    texts = all_test_texts()
    wrong = []
    for text in texts:
        expected = tok(text, add_special_tokens=False)["input_ids"]
        if nfc and unicodedata.normalize("NFC", text) != text:
            text = unicodedata.normalize("NFC", text)  # the one difference: llama.cpp does not normalize
        if llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == expected:
            continue
        if pre == "gpt-4o" and any(unicodedata.category(c).startswith("M") and ord(c) > 0x2FF for c in text):
            continue  # a combining mark of a non-Latin script: llama.cpp's approximated o200k regex
        wrong.append(text)
    assert not wrong, f"{name}: {len(wrong)} of {len(texts)} texts tokenize differently, e.g. {wrong[:3]!r}"
    # BOS exactly as the HF tokenizer adds it (a doubled or missing BOS shifts every logit)
    text = "Hello world"
    assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"]


def test_every_stop_token_ends_generation(vocab_gguf):
    from edgetune.stops import stop_ids

    name, tok, llm = vocab_gguf
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ids = stop_ids(tok, Path(tok.name_or_path))
    assert ids and all(llama_cpp.llama_vocab_is_eog(vocab, i) for i in ids), tok.convert_ids_to_tokens(ids)
