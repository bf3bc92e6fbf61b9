"""The verification gate on the embedded SmolLM2-135M-Instruct: F16 must match transformers, quants report numbers.

One HFReference (one fp32 forward pass per text) serves all three files.
"""
from __future__ import annotations

import json
import time

import llama_cpp
import pytest
import torch

pytestmark = pytest.mark.integration

from edgetune.export import verify  # noqa: E402
from edgetune.export.gguf_convert import convert  # noqa: E402
from edgetune.export.modelfile import write_modelfile  # noqa: E402
from edgetune.export.quantize import quantize  # noqa: E402
from shared_data import held_out_texts  # noqa: E402


@pytest.fixture(scope="module")
def ref(smollm2_dir):
    return verify.HFReference(smollm2_dir)


@pytest.fixture(scope="module")
def texts(ref):
    return held_out_texts(ref.tokenizer)


@pytest.fixture(scope="module")
def results(smollm2_dir, ref, texts, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("smollm2_verify")
    f16 = convert(smollm2_dir, out / "smollm2.F16.gguf", "f16")
    files = {"f16": f16}
    for qtype in ("q8_0", "q4_k_m"):
        files[qtype] = quantize(f16, out / f"smollm2.{qtype.upper()}.gguf", qtype)
    found = {}
    for qtype, path in files.items():
        t0 = time.time()
        found[qtype] = verify.verify_gguf(path, ref, texts, verify.DEFAULT_CHAT_PROMPTS, qtype)
        found[qtype]["seconds"] = round(time.time() - t0, 1)
    print("\n" + json.dumps({q: {k: r[k] for k in ("size_bytes", "top1", "top1_ties_ok", "mean_kld", "max_kld", "positions",
                                                    "finish_reasons", "seconds")} for q, r in found.items()}))
    return found


def test_f16_matches_transformers(results):
    r = results["f16"]
    assert r["token_ids_identical"], r["token_mismatches"]
    assert r["positions"] > 500
    assert r["mean_kld"] <= verify.MAX_MEAN_KLD["f16"] and r["max_kld"] <= verify.MAX_POSITION_KLD["f16"], r
    assert r["top1"] >= 0.995, r
    assert r["stops_at_eos"], r["finish_reasons"]
    assert all(reply.strip() and "<|im_end|>" not in reply for reply in r["replies"])
    assert r["vocab_size_ok"] and r["n_vocab"]["gguf"] == 49152 and r["chat_template_present"]
    assert r["passed"] and r["failures"] == []
    verify.check_gate(r)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m"])
def test_quantized_numbers_are_reported(results, qtype):
    r, f16 = results[qtype], results["f16"]
    assert r["type"] == qtype and r["size_bytes"] < f16["size_bytes"]
    assert r["token_ids_identical"] and r["positions"] == f16["positions"]
    assert 0.5 < r["top1"] <= 1 and r["mean_kld"] > f16["mean_kld"]
    assert len(r["finish_reasons"]) == len(verify.DEFAULT_CHAT_PROMPTS)
    assert r["passed"] == (not r["failures"])
    verify.check_gate(r)  # quantized files report, they do not raise
    json.dumps(r)


def test_q4_k_m_drifts_more_than_q8_0(results):
    assert results["q4_k_m"]["mean_kld"] > results["q8_0"]["mean_kld"]
    assert results["q4_k_m"]["size_bytes"] < results["q8_0"]["size_bytes"]


def test_reply_cut_by_max_tokens_is_not_a_stop(results, ref, texts, tmp_path_factory, monkeypatch):
    f16 = next(tmp_path_factory.getbasetemp().glob("smollm2_verify*/smollm2.F16.gguf"))
    monkeypatch.setattr(verify, "CHAT_MAX_TOKENS", 3)
    r = verify.verify_gguf(f16, ref, texts[:1], ["What is the capital of France?"], "f16")
    assert r["finish_reasons"] == ["length"] and r["stops_at_eos"] is False
    assert any("did not stop within 3 tokens" in f for f in r["failures"]) and not r["passed"]
    verify.check_gate(r)  # a faithful file of a model that rambles: reported, not raised


def test_modelfile_for_smollm2(smollm2_dir, tmp_path):
    text = write_modelfile(tmp_path, "smollm2.Q4_K_M.gguf", smollm2_dir).read_text(encoding="utf-8")
    assert 'PARAMETER stop "<|im_end|>"' in text and "FROM ./smollm2.Q4_K_M.gguf" in text
    # the template's default system message is the TEMPLATE's else branch, used when a chat has none
    assert "{{ else }}<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face" in text
    assert 'TEMPLATE """' in text and "SYSTEM" not in text.split("PARAMETER")[-1]
