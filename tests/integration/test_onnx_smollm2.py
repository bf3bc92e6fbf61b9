"""ONNX export of the embedded SmolLM2-135M-Instruct: fp32 must match transformers (top-1 >= 0.999), int8/int4
report their numbers. One HFReference (one fp32 forward pass per text) serves all variants."""
from __future__ import annotations

import json
import time

import onnxruntime  # noqa: F401  (hard dependencies: a missing one fails the run, never skips it)
import onnxruntime_genai  # noqa: F401
import pytest

pytestmark = pytest.mark.integration

from edgetune.export import verify  # noqa: E402
from edgetune.export.onnx_export import build_variant  # noqa: E402
from edgetune.export.onnx_verify import check_onnx_gate, verify_onnx  # noqa: E402
from shared_data import held_out_texts  # noqa: E402


@pytest.fixture(scope="module")
def results(smollm2_dir, tmp_path_factory) -> dict[str, dict]:
    ref = verify.HFReference(smollm2_dir)
    texts = held_out_texts(ref.tokenizer)
    out = tmp_path_factory.mktemp("smollm2_onnx")
    found = {}
    for variant in ("fp32", "int8", "int4"):
        t0 = time.time()
        folder = build_variant(smollm2_dir, out / variant, variant)
        t1 = time.time()
        found[variant] = verify_onnx(folder, ref, texts, verify.DEFAULT_CHAT_PROMPTS, variant)
        found[variant].update(build_s=round(t1 - t0, 1), verify_s=round(time.time() - t1, 1))
    print("\n" + json.dumps({v: {k: r[k] for k in ("size_bytes", "top1", "top1_ties_ok", "mean_kld", "max_kld", "positions",
                                                    "finish_reasons", "build_s", "verify_s")}
                             for v, r in found.items()}))
    return found


def test_fp32_matches_transformers(results):
    r = results["fp32"]
    assert r["token_ids_identical"], r["token_mismatches"]
    assert r["mean_kld"] < 1e-4 and r["max_kld"] < 1e-2 and r["top1"] >= 0.995, r
    assert not r["fidelity_failures"]
    check_onnx_gate(r)  # does not raise
    assert r["stops_at_eos"], r["replies"]


def test_quantized_variants_report_numbers(results):
    sizes = {v: results[v]["size_bytes"] for v in results}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]
    for v in ("int8", "int4"):
        r = results[v]
        assert 0.5 < r["top1"] <= 1.0 and r["mean_kld"] >= 0  # reported, not gated (small models drift)
        assert r["token_ids_identical"] and r["chat_template_present"] and r["end_of_turn_stops"]
        check_onnx_gate(r)  # never raises for quantized variants
