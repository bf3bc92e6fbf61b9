"""Two real training steps per family (transformers + PEFT + TRL on CPU) with the family's own chat template:
the LoRA adapter moves, the base does not, and the run records how its template's replies were located."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from edgetune import config as C
from edgetune.train import train
from families import FAMILIES, build_family
from shared_data import write_rows

CONVS = [[{"role": "system", "content": "Talk like a pirate."},
          {"role": "user", "content": f"Say the number {i}."}, {"role": "assistant", "content": f"Arr! {i} it be."},
          {"role": "user", "content": "And again?"}, {"role": "assistant", "content": f"Arr, {i} again."}]
         for i in range(8)]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_two_steps_train_the_adapter_only(name, tmp_path):
    model = build_family(name, tmp_path / name)
    data = write_rows(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVS])
    cfg = C.resolve(None, {"model": {"ref": str(model), "load_in_4bit": name == "qwen3"},  # one QLoRA (NF4) run
                           "data": {"path": str(data)}, "run_dir": str(tmp_path / "run"),
                           "train": {"max_steps": 2, "batch_size": 2, "learning_rate": 5e-3, "max_length": 1024}},
                    profile="cpu")
    result = train(cfg)
    assert result.steps == 2 and result.final_loss == result.final_loss  # not NaN
    adapter = load_file(result.adapter_dir / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must have moved"
    assert not any("lora" not in k for k in adapter)  # only adapter weights were trained and saved
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["n_valid"] == 8 and report["mask_method"] == "turns"
    assert report["n_sequences"] == (16 if name in ("qwen3", "mistral") else 8)  # rewritten turns train apart
