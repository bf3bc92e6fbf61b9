"""GGUF export per model family, checked by llama.cpp (an implementation independent of transformers and of our
converter) against the HF model: tiny random checkpoints of each family with its hard features switched on
(tests/families.py), converted by edgetune, then run through llama.cpp."""
from __future__ import annotations

import json

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
# F32 GGUF logits in llama.cpp vs transformers fp32: max |difference| / max |HF logit| over every position.
LOGIT_TOLERANCE = 1e-4


class GgmlGelu(torch.nn.Module):
    """llama.cpp's CPU GELU (ggml-cpu/vec.h, GGML_GELU_FP16): the input rounded to fp16 and looked up in a table of
    fp16 tanh-GELU values; x past +10 passes through, below -10 gives 0. With transformers' exact GELU, Gemma's F32
    logits land 1.8e-4 off for that alone; with this one they match like the SwiGLU families' (measured 6e-5)."""

    def forward(self, x):
        table = torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()
        return torch.where(x >= 10, x, torch.where(x <= -10, torch.zeros_like(x), table))


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
    """transformers fp32 logits; a GELU family runs llama.cpp's GELU (see GgmlGelu), the one op whose CPU kernel
    is an approximation outside the converter's control."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if getattr(model.config, "hidden_activation", None) == "gelu_pytorch_tanh":
        for layer in model.model.layers:
            layer.mlp.act_fn = GgmlGelu()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def assert_logits_match(ours, ref):
    scale, diff = float(np.abs(ref).max()), float(np.abs(ours - ref).max())
    assert diff <= LOGIT_TOLERANCE * scale, f"max |diff| {diff:.3g} = {diff / scale:.2e} x max |logit| {scale:.3g}"
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_f32_logits_match_transformers(family, tmp_path):
    """Over 60-76 tokens: Gemma's 16-token window left several times, Phi within its original context (short
    LongRoPE factors in both; the long ones are tested below)."""
    name, model_dir = family
    ids = load_tokenizer(model_dir)(TEXT)["input_ids"]
    ours = llama_logits(convert(model_dir, tmp_path / "m.F32.gguf", "f32"), ids)
    assert_logits_match(ours, hf_logits(model_dir, ids))


def ggml_rope(model, factors):
    """transformers' rotary embedding computed as llama.cpp's CPU RoPE computes it (ggml-cpu/ops.cpp,
    ggml_rope_cache_init): a float32 recurrence theta *= base^(-2/n_rot) per pair, each angle divided by its
    frequency factor. Its rounding differs from transformers' inv_freq * position by up to 3e-5 in cos/sin at
    position 1100, which these large-weight random Phi models turn into 1.4-1.9e-4 of their logits by the end of
    1124 tokens (with the angles computed alike, 9e-6)."""
    rotary = model.model.rotary_emb
    n_rot = 2 * len(factors)
    base = model.config.rope_parameters["rope_theta"]

    def forward(x, position_ids):
        scale = torch.tensor(float(base), dtype=torch.float32) ** torch.tensor(-2.0 / n_rot, dtype=torch.float32)
        theta, angles = position_ids[0].to(torch.float32), []
        for factor in factors:
            angles.append(theta / torch.tensor(factor, dtype=torch.float32))
            theta = theta * scale
        emb = torch.cat([torch.stack(angles, -1)] * 2, -1)[None]
        return emb.cos() * rotary.attention_scaling, emb.sin() * rotary.attention_scaling

    rotary.forward = forward


@pytest.mark.parametrize("name", ["phi4_mini", "phi3_5"])
def test_longrope_long_factors_past_the_original_context(name, tmp_path):
    """Past original_max_position_embeddings (1024 here) both use the long factors: transformers for a sequence
    longer than it, llama.cpp for a context larger than it (so the rope_factors_long tensor is checked too)."""
    from transformers import AutoModelForCausalLM

    model_dir = build_family(name, tmp_path / name)
    rope = FAMILIES[name].config["rope_parameters"]
    original = rope["original_max_position_embeddings"]
    ids = load_tokenizer(model_dir)(TEXT * 24)["input_ids"][: original + 100]
    assert len(ids) == original + 100
    ours = llama_logits(convert(model_dir, tmp_path / "m.F32.gguf", "f32"), ids, n_ctx=2 * original)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ggml_rope(model, rope["long_factor"])
    with torch.no_grad():
        assert_logits_match(ours, model(torch.tensor([ids])).logits[0].numpy())
    # not vacuous: on a prefix within the original length transformers switches to the short factors
    prefix = hf_logits(model_dir, ids[:original])
    assert np.abs(ours[:original] - prefix).max() > 100 * LOGIT_TOLERANCE * np.abs(prefix).max()


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


@pytest.mark.parametrize("name, family, attribute, wrong", [
    ("gemma3", "gemma3_text", "transforms", lambda self, name: False),  # norms written without their +1
    ("llama3_2", "llama", "permute_qk", False),  # q/k rows left in HF's rotary-halves order
])
def test_a_wrong_conversion_fails_the_gate(tmp_path, monkeypatch, name, family, attribute, wrong):
    """The gate is not float-noise tolerance only: a real conversion bug fails it with an ExportError."""
    model_dir = build_family(name, tmp_path / name)
    monkeypatch.setattr(type(EXPORT_FAMILIES[family]), attribute, wrong)
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


def _wrap_as_gemma3_multimodal(text_dir, out, prefix):
    """The tiny gemma3_text checkpoint as Google ships the 4B+ models: a `gemma3` config whose text_config lists only
    what differs from transformers' defaults, language-model tensors under `prefix`, and a vision tower."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file
    from transformers import Gemma3TextConfig

    out.mkdir()
    for file in text_dir.iterdir():
        if file.is_file() and file.name not in ("config.json", "model.safetensors"):
            shutil.copy(file, out / file.name)
    config = json.loads((text_dir / "config.json").read_text())
    defaults = Gemma3TextConfig().to_dict()
    kept = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "sliding_window")
    text = {k: v for k, v in config.items() if k in kept or (k in defaults and defaults[k] != v)}
    assert "rms_norm_eps" not in text and "rope_parameters" not in text  # left to the defaults, as on the hub
    (out / "config.json").write_text(json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text,
        "eos_token_id": config["eos_token_id"], "vision_config": {"model_type": "siglip_vision_model"}}))
    vision = "model.vision_tower." if prefix.startswith("model.") else "vision_tower."
    tensors = {prefix + k.removeprefix("model."): v for k, v in load_file(text_dir / "model.safetensors").items()}
    tensors[vision + "vision_model.embeddings.patch_embedding.weight"] = np.ones((8, 3, 2, 2), np.float32)
    save_file(tensors, out / "model.safetensors")
    return out


@pytest.mark.parametrize("prefix", ["model.language_model.", "language_model.model."])  # transformers 5 / 4.x
def test_a_gemma3_multimodal_checkpoint_exports_its_language_model(tmp_path, prefix):
    """Same GGUF as from the text-only checkpoint: every metadata value (settings the config leaves out taken from
    transformers' defaults) and every tensor, the vision tower left out."""
    import gguf

    from edgetune.export.families import gguf_support

    text_dir = build_family("gemma3", tmp_path / "text")
    wrapped = _wrap_as_gemma3_multimodal(text_dir, tmp_path / "wrapped", prefix)
    assert gguf_support(json.loads((wrapped / "config.json").read_text())) is None
    a = gguf.GGUFReader(convert(text_dir, tmp_path / "text.gguf", "f32"))
    b = gguf.GGUFReader(convert(wrapped, tmp_path / "wrapped.gguf", "f32"))
    fields = {k: f.contents() for k, f in a.fields.items() if k != "general.name" and not k.startswith("GGUF.")}
    assert fields == {k: f.contents() for k, f in b.fields.items() if k != "general.name" and not k.startswith("GGUF.")}
    assert [(t.name, t.data.tobytes()) for t in a.tensors] == [(t.name, t.data.tobytes()) for t in b.tensors]


def test_gemma3_defaults_are_transformers_defaults():
    from transformers import Gemma3TextConfig

    defaults = Gemma3TextConfig().to_dict()
    ours = dict(type(EXPORT_FAMILIES["gemma3"]).config_defaults)
    rope = defaults["rope_parameters"]
    assert ours.pop("rope_theta") == rope["full_attention"]["rope_theta"]
    assert ours.pop("rope_local_base_freq") == rope["sliding_attention"]["rope_theta"]
    assert ours == {k: defaults[k] for k in ours}


@pytest.mark.parametrize("model_type, family", [
    ("gemma3n", "Gemma 3n"), ("gemma4", "Gemma 4"), ("qwen3_5", "Qwen3.5"), ("qwen3_5_moe", "Qwen3.5"),
    ("lfm2", "LFM2"), ("granitemoehybrid", "Granite 4"), ("mistral3", "Ministral 3"), ("ministral3", "Ministral 3"),
])
def test_stretch_families_are_refused_up_front(model_type, family):
    from edgetune.export.families import gguf_support

    reason = gguf_support({"model_type": model_type, "text_config": {"model_type": f"{model_type}_text"}})
    assert f"{model_type!r} ({family}" in reason and "runs in llama.cpp" in reason and "cannot export" in reason
    assert "Qwen3, Gemma 3, Phi-3.5 / Phi-4-mini, SmolLM3" in reason
    assert "not supported" in gguf_support({"model_type": "gpt2"})


def test_gguf_support_is_light_to_import():
    import subprocess
    import sys

    code = "import edgetune.export.families, sys; print(' '.join(sys.modules))"
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "edgetune.export.families" in mods and "torch" not in mods and "transformers" not in mods


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_tokenizer_a_run_saves_still_exports(name, tmp_path):
    """What training saves (the tokenizer loaded and saved again by transformers 5, which rebuilds some classes,
    e.g. Qwen2Tokenizer adds an NFC normalizer) must convert as well as the original did."""
    import shutil

    model_dir = build_family(name, tmp_path / name)
    saved = tmp_path / "saved"
    shutil.copytree(model_dir, saved, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json",
                                                                    "chat_template.jinja"))
    load_tokenizer(model_dir).save_pretrained(saved)
    ref = verify.HFReference(saved)
    result = verify.verify_gguf(convert(saved, tmp_path / "m.F16.gguf", "f16"), ref,
                                verify.heldout_texts(None, ref.tokenizer)[:3], [], "f16")
    assert result["token_ids_identical"] and not result["fidelity_failures"], result["fidelity_failures"]
