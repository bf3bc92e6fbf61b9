"""ONNX export per model family: the families onnxruntime-genai's builder converts faithfully export and verify
(fp32 against transformers, every stop id ending generation); the ones it cannot are refused before any work."""
from __future__ import annotations

import pytest

from edgetune.errors import ExportError
from edgetune.export import verify
from edgetune.export.onnx_export import build_variant
from edgetune.export.onnx_support import onnx_support
from edgetune.export.onnx_verify import check_onnx_gate, verify_onnx
from edgetune.preflight import model_config
from families import FAMILIES, build_family

EXPORTED = ("llama3_2", "mistral", "phi3_5", "phi4_mini", "qwen2", "qwen3")
REFUSED = ("gemma3", "smollm3")


def test_every_family_is_either_exported_or_refused():
    assert sorted(EXPORTED + REFUSED) == sorted(FAMILIES)


@pytest.mark.parametrize("name", EXPORTED)
def test_fp32_export_verifies(name, tmp_path):
    model_dir = build_family(name, tmp_path / name)
    assert onnx_support(model_config(str(model_dir))) is None
    folder = build_variant(model_dir, tmp_path / "onnx" / "fp32", "fp32")
    ref = verify.HFReference(model_dir)
    result = verify_onnx(folder, ref, verify.heldout_texts(None, ref.tokenizer)[:4], [], "fp32")
    assert result["mean_kld"] < 1e-6 and result["token_ids_identical"], result
    assert result["end_of_turn_stops"], result["stops_not_eos"]  # generation ends at every stop id
    check_onnx_gate(result)


@pytest.mark.parametrize("name", REFUSED)
def test_unsupported_family_is_refused_before_any_work(name, tmp_path):
    from edgetune import config as C
    from edgetune.export.onnx_export import export_onnx
    from shared_data import write_chat_jsonl

    model_dir = build_family(name, tmp_path / name)
    reason = onnx_support(model_config(str(model_dir)))
    assert reason and "builder" in reason and "GGUF export is unaffected" in reason
    run = tmp_path / "run"
    cfg = C.resolve(None, {"model": {"ref": str(model_dir)}, "data": {"path": str(write_chat_jsonl(tmp_path))},
                           "run_dir": str(run)}, profile="cpu")
    cfg.save(run / "config.toml")
    with pytest.raises(ExportError, match="builder") as err:
        export_onnx(run, ["fp32"])
    assert "--gguf" in err.value.hint and not (run / "merged").exists() and not (run / "onnx").exists()
