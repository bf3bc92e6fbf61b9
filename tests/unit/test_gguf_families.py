"""GGUF export per model family, checked by llama.cpp (an implementation independent of transformers and of our
converter) against the HF model: tiny random checkpoints of each family with its hard features switched on
(tests/families.py), converted by edgetune, then run through llama.cpp."""
from __future__ import annotations

import llama_cpp
import numpy as np
import pytest
import torch

from edgetune.errors import ExportError
from edgetune.export import verify
from edgetune.export.families import FAMILIES as EXPORT_FAMILIES
from edgetune.export.gguf_convert import convert
from edgetune.stops import stop_ids
from edgetune.tokenizer import load_tokenizer
from families import FAMILIES, build_family

# Long enough to leave Gemma's 16-token sliding window many times over, with code, digits and non-ASCII text.
TEXT = ("The quick brown fox jumps over the lazy dog. def add(a, b): return a + b  # Café naïve 日本語 🚀 "
        "Water boils at 100 degrees Celsius. One, two, three, four, five, six, seven. The capital of France is Paris.")
# llama.cpp's CPU GELU goes through an fp16 lookup table (ggml-cpu/vec.h, GGML_GELU_FP16): even an F32 file of a GELU
# family (Gemma) lands ~2e-4 off transformers' logits. Every SwiGLU family must match to 1e-4.
LOGIT_TOLERANCE = {"gemma3": 5e-4}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    return name, build_family(name, tmp_path_factory.mktemp(name))


def llama_logits(path, ids, n_ctx=512):
    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=n_ctx, n_threads=2, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def hf_logits(model_dir, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_f32_logits_match_transformers(family, tmp_path):
    name, model_dir = family
    ids = load_tokenizer(model_dir)(TEXT)["input_ids"]
    ours = llama_logits(convert(model_dir, tmp_path / "m.F32.gguf", "f32"), ids)
    ref = hf_logits(model_dir, ids)
    scale = float(np.abs(ref).max())
    assert np.abs(ours - ref).max() <= LOGIT_TOLERANCE.get(name, 1e-4) * scale
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_f16_passes_the_verification_gate(family, tmp_path):
    """Token ids identical on the fixed set (special tokens included), distributions within the F16 budget, every
    stop id of the family (generation config, eos, end of turn) ends generation in llama.cpp, template inside."""
    name, model_dir = family
    ref = verify.HFReference(model_dir)
    path = convert(model_dir, tmp_path / "m.F16.gguf", "f16")
    result = verify.verify_gguf(path, ref, verify.heldout_texts(None, ref.tokenizer)[:6], [], "f16")
    assert result["token_ids_identical"], result["token_mismatches"]
    assert result["end_of_turn_stops"], result["stops_not_eog"]
    assert result["mean_kld"] <= verify.MAX_MEAN_KLD["f16"] and result["chat_template_present"]
    verify.check_gate(result)  # no raise


def test_generation_stops_at_the_end_of_turn_token(family, tmp_path):
    """llama.cpp ends a reply the moment the family's end-of-turn token is produced (forced here with a logit
    bias: a random model never picks it itself)."""
    name, model_dir = family
    tok = load_tokenizer(model_dir)
    eot = tok.convert_tokens_to_ids(FAMILIES[name].end_of_turn)
    assert eot in stop_ids(tok, model_dir)
    llm = llama_cpp.Llama(str(convert(model_dir, tmp_path / "m.F16.gguf", "f16")), n_ctx=1024, verbose=False)
    try:
        prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                         return_dict=True)["input_ids"]  # ids as HF makes them (BOS included once)
        free = llm.create_completion(prompt, max_tokens=8, temperature=0.0)
        forced = llm.create_completion(prompt, max_tokens=8, temperature=0.0, logit_bias={eot: 1000.0})
    finally:
        llm.close()
    assert free["choices"][0]["finish_reason"] == "length"  # the random model runs on...
    assert forced["choices"][0]["finish_reason"] == "stop"  # ...until the end-of-turn token, where it stops
    assert forced["choices"][0]["text"] == ""


def test_a_wrong_conversion_fails_the_gate(tmp_path, monkeypatch):
    """The gate is not float-noise tolerance only: Gemma's norms written without their +1 fail it."""
    model_dir = build_family("gemma3", tmp_path / "gemma3")
    monkeypatch.setattr(type(EXPORT_FAMILIES["gemma3_text"]), "transforms", lambda self, name: False)
    path = convert(model_dir, tmp_path / "wrong.F16.gguf", "f16")
    ref = verify.HFReference(model_dir)
    result = verify.verify_gguf(path, ref, verify.heldout_texts(None, ref.tokenizer)[:3], [], "f16")
    assert result["mean_kld"] > 100 * verify.MAX_MEAN_KLD["f16"]
    with pytest.raises(ExportError, match="mean KL divergence"):
        verify.check_gate(result)


@pytest.mark.parametrize("change, reason", [
    ({"no_rope_layers": [1, 0, 1, 1]}, "every 4th layer"),
    ({"query_pre_attn_scalar": 48}, "query_pre_attn_scalar"),
])
def test_a_layout_llama_cpp_cannot_run_is_refused_up_front(tmp_path, change, reason):
    import json

    from edgetune.export.families import gguf_support

    name = "smollm3" if "no_rope_layers" in change else "gemma3"
    model_dir = build_family(name, tmp_path / name)
    config = {**json.loads((model_dir / "config.json").read_text()), **change}
    assert reason in gguf_support(config)


@pytest.mark.parametrize("name", ["gemma3", "mistral", "phi3_5"])
def test_a_sentencepiece_gguf_reads_back_as_the_same_tokenizer(name, tmp_path):
    """edgetune.gguf_tokenizer rebuilds the HF tokenizer of a SentencePiece GGUF (what `--model x.gguf` trains
    with; transformers' own GGUF reader drops the merges): ids equal the original tokenizer's and llama.cpp's."""
    from edgetune.gguf_tokenizer import sentencepiece_tokenizer

    model_dir = build_family(name, tmp_path / name)
    path = convert(model_dir, tmp_path / "m.F16.gguf", "f16")
    original, rebuilt = load_tokenizer(model_dir), sentencepiece_tokenizer(path)
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        for text in [TEXT, *verify.FIXED_TOKENIZER_TEXTS]:
            ids = original(text)["input_ids"]
            assert rebuilt(text)["input_ids"] == ids, text
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids, text
    finally:
        llm.close()
    assert rebuilt.eos_token == original.eos_token and rebuilt.chat_template == original.chat_template
