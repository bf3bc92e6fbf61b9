"""HF -> GGUF on tiny random models: llama.cpp and transformers' GGUF reader must both give back the HF logits.

Two independent readers guard against a converter and a reader sharing one mistake (e.g. the q/k permutation).
"""
from __future__ import annotations

import json
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch

from edgetune.errors import ExportError
from edgetune.events import Collect, Note, Progress
from edgetune.export.families.base import rope_parameters as _rope_parameters
from edgetune.export.gguf_convert import convert
from edgetune.export.quantize import compute_imatrix, quantize, read_imatrix

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))  # 3",
    "Café, naïve, Zürich — Ελληνικά, русский, 日本語, 中文, 한국어",
    "emoji 🙂🚀 and 🦙 next to numbers 12345 and 3.14159",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "   leading spaces\n\n\ttabs and  double  spaces ",
]
PROMPT = "What is the capital of France? The capital of France is Paris. 1 + 1 = 2."


def _build(out_dir: Path, tok_dir: Path, model_type: str, **overrides) -> Path:
    """A random 2-layer decoder of `model_type` with the tiny tokenizer; weights scaled up so logits differ."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    settings = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                    tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                    initializer_range=0.2)
    settings.update(overrides)
    config = AutoConfig.for_model(model_type, **settings)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # biases and norms start at 0/1: randomise them so their conversion is checked too
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def _hf_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _llama_cpp_logits(gguf_path: Path, ids: list[int]) -> np.ndarray:
    # f32 KV cache: the default f16 cache alone puts ~1e-3 relative noise on the logits
    llm = llama_cpp.Llama(str(gguf_path), logits_all=True, n_ctx=128, n_threads=2, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def _ids(model_dir: Path, text: str = PROMPT) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"]


def _assert_close(ours: np.ndarray, ref: np.ndarray, rel: float) -> None:
    scale = float(np.abs(ref).max())
    diff = float(np.abs(ours - ref).max())
    assert diff <= rel * scale, f"max |diff| {diff:.3g} > {rel} x max |logit| {scale:.3g}"
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return _build(tmp_path_factory.mktemp("llama"), tiny_tokenizer_dir, "llama")


@pytest.fixture(scope="module")
def llama_f16(llama_dir, tmp_path_factory) -> Path:
    return convert(llama_dir, tmp_path_factory.mktemp("gguf") / "tiny.F16.gguf", "f16")


@pytest.mark.parametrize("outtype, rel", [("f32", 1e-4), ("f16", 1e-2), ("bf16", 4e-2)])
def test_llama_logits_match_llama_cpp(llama_dir, tmp_path, outtype, rel):
    ids = _ids(llama_dir)
    out = convert(llama_dir, tmp_path / f"tiny.{outtype}.gguf", outtype)
    _assert_close(_llama_cpp_logits(out, ids), _hf_logits(llama_dir, ids), rel)


def test_transformers_gguf_reader_agrees(llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = convert(llama_dir, tmp_path / "tiny.F32.gguf", "f32")
    ids = _ids(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].numpy()
    _assert_close(theirs, _hf_logits(llama_dir, ids), 1e-4)


def test_tokenizer_ids_match_hf(llama_dir, llama_f16):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    llm = llama_cpp.Llama(str(llama_f16), n_ctx=128, vocab_only=True, verbose=False)
    try:
        for text in TEXTS:
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"], text
    finally:
        llm.close()


def test_gguf_metadata(llama_f16):
    import gguf

    reader = gguf.GGUFReader(llama_f16)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")
              or k in ("tokenizer.ggml.pre", "tokenizer.ggml.model", "tokenizer.ggml.eos_token_id")}
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    assert fields["llama.block_count"] == 2 and fields["llama.attention.head_count_kv"] == 2
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied: llama.cpp reuses token_embd


@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m"])
def test_quantized_files_load(llama_dir, llama_f16, tmp_path, qtype):
    events = Collect()
    out = quantize(llama_f16, tmp_path / f"tiny.{qtype}.gguf", qtype, sink=events)
    assert out.is_file() and out.stat().st_size < llama_f16.stat().st_size
    assert not list(tmp_path.glob(".*.tmp"))
    logits = _llama_cpp_logits(out, _ids(llama_dir))
    assert np.isfinite(logits).all()
    if qtype == "q8_0":  # 8-bit weights (and activations) on a random model: close, not exact
        ref = _hf_logits(llama_dir, _ids(llama_dir))
        assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.99


def test_imatrix_computed_and_applied(llama_dir, llama_f16, tmp_path):
    imatrix = compute_imatrix(llama_dir, TEXTS, tmp_path / "imatrix.gguf")
    entries = read_imatrix(imatrix)
    assert entries["blk.0.attn_q.weight"].shape == (64,) and entries["blk.1.ffn_down.weight"].shape == (128,)
    out = quantize(llama_f16, tmp_path / "tiny.q4_k_m.gguf", "q4_k_m", imatrix=imatrix)
    plain = quantize(llama_f16, tmp_path / "plain.q4_k_m.gguf", "q4_k_m")
    assert np.isfinite(_llama_cpp_logits(out, _ids(llama_dir))).all()
    # llama.cpp used it: the importance-weighted quantization picked other values for the weighted tensors
    import gguf

    weighted = {t.name: bytes(t.data) for t in gguf.GGUFReader(out).tensors}
    unweighted = {t.name: bytes(t.data) for t in gguf.GGUFReader(plain).tensors}
    changed = [n for n in weighted if weighted[n] != unweighted[n]]
    assert {"blk.0.attn_q.weight", "blk.0.ffn_gate.weight", "blk.1.attn_q.weight"} <= set(changed), changed


def test_imatrix_batches_equal_one_text_at_a_time(llama_dir, tmp_path):
    """Rows of different lengths go through the streamed model in padded batches; the padding is not counted, so
    the sums and counts equal those of the whole model run on one text at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.tokenizer import load_tokenizer

    texts = [t * k for k, t in enumerate(TEXTS, 1)]
    entries = read_imatrix(compute_imatrix(llama_dir, texts, tmp_path / "imatrix.gguf"))
    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    tok = load_tokenizer(llama_dir)
    seen = {"x": 0, "n": 0}

    def hook(module, inputs, output):
        seen["x"], seen["n"] = seen["x"] + (inputs[0][0] ** 2).sum(0), seen["n"] + inputs[0].shape[1]

    model.model.layers[1].mlp.down_proj.register_forward_hook(hook)
    with torch.no_grad():
        for t in texts:
            model(torch.tensor([tok(t, truncation=True, max_length=512)["input_ids"]]))
    assert np.allclose(entries["blk.1.ffn_down.weight"], (seen["x"] / seen["n"]).numpy(), rtol=1e-4)


def test_quantize_rejects_unknown_type(llama_f16, tmp_path):
    with pytest.raises(ExportError, match="q4_k_m"):
        quantize(llama_f16, tmp_path / "x.gguf", "q9_9")


@pytest.mark.parametrize("model_type, extra", [
    ("qwen2", {}),  # q/k/v biases
    ("qwen3", {"head_dim": 32}),  # q_norm/k_norm, head_dim != hidden/heads
    ("mistral", {"sliding_window": None}),
    ("llama", {"tie_word_embeddings": False, "rope_parameters": {  # Llama 3.x long-context RoPE -> rope_freqs
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}),
])
def test_other_architectures_match_llama_cpp(tiny_tokenizer_dir, tmp_path, model_type, extra):
    model_dir = _build(tmp_path / "hf", tiny_tokenizer_dir, model_type, **extra)
    ids = _ids(model_dir)
    out = convert(model_dir, tmp_path / "m.F32.gguf", "f32")
    _assert_close(_llama_cpp_logits(out, ids), _hf_logits(model_dir, ids), 1e-4)


def test_plan_note_before_progress(llama_dir, tmp_path):
    events = Collect()
    convert(llama_dir, tmp_path / "tiny.gguf", "f16", sink=events)
    assert isinstance(events.events[0], Note) and "tensors" in events.events[0].text
    progress = events.of(Progress)
    assert progress and progress[-1].done == progress[-1].total == len(progress)


@pytest.mark.parametrize("model_type, says", [("gpt2", "not supported"), ("lfm2", "runs in llama.cpp")])
def test_unsupported_architecture(tmp_path, model_type, says):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "n_layer": 2}))
    with pytest.raises(ExportError, match="Llama 3.x.*Qwen3.*Gemma 3.*Phi") as err:
        convert(tmp_path, tmp_path / "x.gguf")
    assert model_type in str(err.value) and says in str(err.value) and not list(tmp_path.glob("*.gguf"))


def test_bad_outtype(llama_dir, tmp_path):
    with pytest.raises(ExportError, match="q4_k_m|f16"):
        convert(llama_dir, tmp_path / "x.gguf", "q4_k_m")


def test_interrupt_leaves_no_file(llama_dir, tmp_path, monkeypatch):
    import gguf

    real = gguf.GGUFWriter.write_tensor_data
    calls = []

    def interrupted(self, tensor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, tensor, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", interrupted)
    out = tmp_path / "tiny.gguf"
    with pytest.raises(KeyboardInterrupt):
        convert(llama_dir, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_refused_before_writing(llama_dir, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1000))
    with pytest.raises(ExportError, match="GB free"):
        convert(llama_dir, tmp_path / "tiny.gguf")
    assert list(tmp_path.iterdir()) == []


def test_rope_theta_from_either_config_spelling():
    assert _rope_parameters({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}})["rope_theta"] == 1e6
    assert _rope_parameters({"rope_theta": 5e5})["rope_theta"] == 5e5
    assert _rope_parameters({"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}}) == \
        {"type": "linear", "factor": 2.0, "rope_theta": 1e4}


@pytest.mark.parametrize("outtype", ["bf16", "f16"])
def test_bf16_checkpoint(llama_dir, tmp_path, outtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bf16_dir = tmp_path / "hf_bf16"
    AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.bfloat16).save_pretrained(bf16_dir)
    AutoTokenizer.from_pretrained(llama_dir).save_pretrained(bf16_dir)
    ids = _ids(bf16_dir)
    out = convert(bf16_dir, tmp_path / f"tiny.{outtype}.gguf", outtype)
    # llama.cpp also rounds activations to bf16 for bf16 weights, hence the looser bound
    _assert_close(_llama_cpp_logits(out, ids), _hf_logits(bf16_dir, ids), 4e-2 if outtype == "bf16" else 1e-2)
    if outtype == "bf16":  # bf16 -> bf16 copies the bits
        import gguf
        from safetensors import safe_open

        with safe_open(bf16_dir / "model.safetensors", "pt") as f:
            source = f.get_tensor("model.layers.0.mlp.down_proj.weight").view(torch.int16).numpy()
        written = next(t for t in gguf.GGUFReader(out).tensors if t.name == "blk.0.ffn_down.weight")
        assert np.array_equal(np.asarray(written.data).view(np.int16).reshape(source.shape), source)
