"""Merge: dequantize the base (never merge into 4-bit), merge the adapter, save 16-bit, report the logit difference."""
import json

import pytest

from edgetune import config as C
from edgetune.merge import merge
from edgetune.train import train


@pytest.mark.parametrize("four_bit", [False, True])
def test_merge_matches_base_plus_adapter(four_bit, tiny_model_dir, chat_jsonl, tmp_path):
    run = tmp_path / "run"
    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": four_bit},
                           "data": {"path": str(chat_jsonl)}, "run_dir": str(run),
                           "train": {"max_steps": 6, "learning_rate": 1e-2}}, profile="cpu")
    train(cfg)
    result = merge(run)
    merged = run / "merged"
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert (merged / "chat_template.jinja").is_file() or "chat_template" in (merged / "tokenizer_config.json").read_text()
    assert result.dtype == "fp16"
    # fp16 rounding of the merged weights is the only difference left (exact NF4 dequantization).
    assert result.max_logit_diff < 0.02, result
    report = json.loads((run / "report.json").read_text())
    assert report["merge"]["max_logit_diff"] == result.max_logit_diff


def test_merge_needs_an_adapter(tmp_path):
    from edgetune.errors import RunDirError

    (tmp_path / "config.toml").write_text("")
    with pytest.raises(RunDirError, match="missing adapter"):
        merge(tmp_path)
