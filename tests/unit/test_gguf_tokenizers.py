"""llama.cpp's own tokenizer tests (models/ggml-vocab-*.gguf.inp/.out in its source) on GGUF vocabularies that
edgetune writes from real tokenizers (Qwen3, Llama 3.1, Gemma 3, Mistral's "llama2", gpt-oss; fetched by
tests/fetch_assets.py), loaded by llama.cpp with vocab_only=True.

Where llama.cpp's reference is the same vocabulary (Llama 3.1 / llama-bpe, Qwen3 / qwen2, Gemma 3 / gemma-4),
llama.cpp's ids on our file must equal the reference ids of its .out file; for every tokenizer they must equal the
Hugging Face tokenizer's ids (as edgetune loads it) on every .inp text of every test file (50 distinct texts) and on
the fixed special-token / emoji / code set the export gate uses (14), 64 texts in all.
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
# The npm "llama2" package holds Mistral 7B's 32,000-piece SentencePiece vocabulary (id 28705 is "▁"; in Meta's
# Llama 2 it is 29871), so ggml-vocab-llama-spm's ids do not apply to it; it is compared with Hugging Face like the
# others. Gemma 4 kept Gemma 3's 262,144-piece vocabulary for text: the test asserts that before relying on it.
TOKENIZERS = {"qwen3": ("qwen3", "qwen2"), "llama3_1": ("llama", "llama-bpe"), "llama2": ("llama", None),
              "gemma3": ("gemma3", "gemma-4"), "gptoss": ("llama", None)}
# llama.cpp's name for each tokenizer's pre-tokenizer (recognised by hash or by tokenizer.json's split regex)
PRE = {"qwen3": "qwen2", "llama3_1": "llama-bpe", "llama2": "default", "gemma3": "default", "gptoss": "gpt-4o"}
VOCAB_TESTS = ("llama-bpe", "qwen2", "qwen35", "llama-spm", "phi-3", "gpt-2", "gemma-4")
# llama.cpp's gpt-4o pre-tokenizer (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_GPT4O): o200k's split regex with
# lookaheads in place of its letter classes, and without \p{M}, so combining marks split off their letters. (The
# variant with \p{M}, pre "granite-embed-multi-97m", is unknown to older llama.cpp builds such as Ollama's, which
# refuse to load the file; edgetune writes "gpt-4o", as llama.cpp's own converter does for Phi-4-mini.)
LLAMA_CPP_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


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


@pytest.mark.parametrize("vocab_gguf", sorted(n for n, (_, ref) in TOKENIZERS.items() if ref), indirect=True)
def test_llama_cpp_reference_ids_of_the_same_vocabulary(vocab_gguf):
    name, tok, llm = vocab_gguf
    cases = read_vocab_test(TOKENIZERS[name][1])
    not_same = [t for t, ids in cases if tok(t, add_special_tokens=False)["input_ids"] != ids]
    assert not not_same, f"{name} is not the reference's vocabulary: HF differs on {not_same[:2]!r}"
    wrong = [(t, ids) for t, ids in cases if llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) != ids]
    assert not wrong, f"{len(wrong)} of {len(cases)} llama.cpp reference texts differ, e.g. {wrong[0][0]!r}"


def llama_cpp_split(tok_json_path: Path):
    """The HF tokenizer with llama.cpp's gpt-4o split regex in place of o200k's: what llama.cpp computes."""
    from tokenizers import Tokenizer

    tok_json = json.loads(tok_json_path.read_text(encoding="utf-8"))
    split = tok_json["pre_tokenizer"]["pretokenizers"][0]
    assert split["type"] == "Split" and "\\p{M}" in split["pattern"]["Regex"]
    split["pattern"]["Regex"] = LLAMA_CPP_GPT4O_SPLIT
    return Tokenizer.from_str(json.dumps(tok_json))


def test_ids_equal_the_hugging_face_tokenizer_on_every_test_text(vocab_gguf):
    """Every text of every llama.cpp tokenizer test plus the gate's fixed set: llama.cpp's ids on our file equal the
    HF tokenizer's. Two documented llama.cpp behaviours (the export plan warns about both) change the expectation,
    each only where it applies: llama.cpp does not apply Unicode NFC normalization (Qwen's tokenizer does), so
    decomposed text is given to it composed; its gpt-4o regex splits combining marks off their letters, so where
    that regex splits differently from o200k's the expectation is the HF tokenizer running llama.cpp's regex."""
    name, tok, llm = vocab_gguf
    tok_json_path = Path(tok.name_or_path) / "tokenizer.json"
    nfc = '"NFC"' in json.dumps(json.loads(tok_json_path.read_text(encoding="utf-8"))["normalizer"])
    assert llm.metadata.get("tokenizer.ggml.pre") == PRE[name]
    gpt4o = PRE[name] == "gpt-4o"
    llama_cpp_regex = llama_cpp_split(tok_json_path) if gpt4o else None
    texts = all_test_texts()
    wrong, documented = [], []
    for text in texts:
        expected = tok(text, add_special_tokens=False)["input_ids"]
        given = text
        if nfc and unicodedata.normalize("NFC", text) != text:
            given = unicodedata.normalize("NFC", text)
            documented.append(("NFC", text))
        if gpt4o:
            regex_ids = llama_cpp_regex.encode(text, add_special_tokens=False).ids
            if regex_ids != expected:
                assert any(unicodedata.category(c).startswith("M") for c in text), text  # only combining marks
                expected = regex_ids
                documented.append(("combining marks", text))
        if llm.tokenize(given.encode("utf-8"), add_bos=False, special=True) != expected:
            wrong.append(text)
    print(f"{name}: {len(texts) - len(wrong)} of {len(texts)} texts identical "
          f"({len(documented)} through a documented llama.cpp difference: {[k for k, _ in documented]})")
    assert not wrong, f"{name}: {len(wrong)} of {len(texts)} texts tokenize differently, e.g. {wrong[:3]!r}"
    assert len(documented) <= 3, documented  # the differences stay the narrow cases named above
    # BOS exactly as the HF tokenizer adds it (a doubled or missing BOS shifts every logit)
    text = "Hello world"
    assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"]


def test_every_stop_token_ends_generation(vocab_gguf):
    from edgetune.stops import stop_ids

    name, tok, llm = vocab_gguf
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ids = stop_ids(tok, Path(tok.name_or_path))
    assert ids and all(llama_cpp.llama_vocab_is_eog(vocab, i) for i in ids), tok.convert_ids_to_tokens(ids)
