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


def test_merge_falls_back_to_bf16_when_a_weight_exceeds_fp16(tiny_model_dir, chat_jsonl, tmp_path):
    """auto merges to fp16 (the F16 GGUF's precision), but never writes an inf: a weight beyond fp16's range
    makes the merge bf16, with a warning."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from edgetune.events import Note

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    weights = load_file(base / "model.safetensors")
    weights["model.norm.weight"][0] = 1e5
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    run = tmp_path / "run"
    train(C.resolve(None, {"model": {"ref": str(base), "load_in_4bit": False}, "data": {"path": str(chat_jsonl)},
                           "run_dir": str(run), "train": {"max_steps": 1}}, profile="cpu"))
    notes = []
    result = merge(run, sink=lambda e: notes.append(e.text) if isinstance(e, Note) else None)
    assert result.dtype == "bf16" and any("float16's range" in n for n in notes)
    from edgetune.safetensors_io import checkpoint_index, read_tensor

    norm = read_tensor(checkpoint_index(run / "merged")["model.norm.weight"])
    assert norm.dtype == torch.bfloat16 and torch.isfinite(norm).all() and float(norm[0]) > 9e4
