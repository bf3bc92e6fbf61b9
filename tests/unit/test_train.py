"""Real TRL training on a tiny random model (CPU): adapters learn, the base stays frozen, events and files appear."""
import json

import pytest
import torch
from safetensors.torch import load_file

from edgetune import config as C
from edgetune.events import Collect, MetricsFile, Fanout, TrainStep, TrainStarted, CheckpointSaved
from edgetune.train import train


def make_cfg(model_dir, data, run_dir, **train_overrides):
    overrides = {"model": {"ref": str(model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                 "run_dir": str(run_dir), "train": {"max_steps": 8, "learning_rate": 5e-3, "save_steps": 4,
                                                    "batch_size": 4, **train_overrides}}
    return C.resolve(None, overrides, profile="cpu")


def test_lora_weights_change_base_weights_do_not(tiny_model_dir, chat_jsonl, tmp_path):
    cfg = make_cfg(tiny_model_dir, chat_jsonl, tmp_path / "run")
    events = Collect()
    result = train(cfg, Fanout(events, MetricsFile(tmp_path / "run" / "metrics.jsonl")))
    base = load_file(tiny_model_dir / "model.safetensors")
    adapter = load_file(result.adapter_dir / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must have moved"
    # The base checkpoint on disk is untouched, and the trained model's base weights equal it.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.adapter_dir)
    for name, p in model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_layer.", "")
        assert torch.equal(p.detach(), base[key]), f"base weight {key} changed"
    steps = events.of(TrainStep)
    assert [s.step for s in steps] == list(range(1, 9))
    assert steps[-1].loss < steps[0].loss
    assert events.of(TrainStarted)[0].max_steps == 8
    assert {c.reason for c in events.of(CheckpointSaved)} == {"interval", "final"}
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step_lines = [r for r in lines if r["event"] == "TrainStep"]
    assert all("step" in r and "loss" in r for r in step_lines)
    run = tmp_path / "run"
    assert (run / "config.toml").is_file() and (run / "data_report.json").is_file()
    assert C.resolve(run / "config.toml").train.max_steps == 8


def test_4bit_qlora_path_trains_on_cpu(tiny_model_dir, chat_jsonl, tmp_path):
    """bitsandbytes' CPU backend: NF4 base + LoRA, through prepare_model_for_kbit_training."""
    cfg = make_cfg(tiny_model_dir, chat_jsonl, tmp_path / "run4", max_steps=4)
    cfg.model.load_in_4bit = True
    events = Collect()
    result = train(cfg, events)
    assert result.steps == 4
    adapter_cfg = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == cfg.lora.r
    assert all(s.loss == s.loss for s in events.of(TrainStep))  # no NaN


def test_existing_checkpoints_need_resume(tiny_model_dir, chat_jsonl, tmp_path):
    from edgetune.errors import RunDirError

    cfg = make_cfg(tiny_model_dir, chat_jsonl, tmp_path / "run", max_steps=4)
    train(cfg)
    with pytest.raises(RunDirError, match="--resume"):
        train(cfg)


def test_unknown_target_module_is_a_config_error(tiny_model_dir, chat_jsonl, tmp_path):
    from edgetune.errors import ConfigError

    cfg = make_cfg(tiny_model_dir, chat_jsonl, tmp_path / "run")
    cfg.lora.target_modules = ["q_proj", "query_key_value"]
    with pytest.raises(ConfigError, match="query_key_value.*its linear layers are"):
        train(cfg)


def test_sample_generations_every_n_steps(tiny_model_dir, chat_jsonl, tmp_path):
    from edgetune.events import SampleGenerated

    cfg = make_cfg(tiny_model_dir, chat_jsonl, tmp_path / "run", max_steps=4, sample_every=2)
    events = Collect()
    train(cfg, events)
    samples = events.of(SampleGenerated)
    assert [s.step for s in samples] == [2, 4]
    assert samples[0].prompt == "Say the word number 0."


@pytest.mark.parametrize("method", ["sft", "dpo", "grpo"])
def test_memory_plan_uses_the_longest_sequence_of_the_data(tiny_model_dir, chat_jsonl, tmp_path, method):
    """Batches pad to their longest row: the estimate follows the data, not train.max_length."""
    from transformers import AutoTokenizer

    from edgetune.train import longest_sequence, prepare_data

    rows = [{"prompt": "Say " + "hi " * i, "chosen": "Arr! " * (i + 1), "rejected": "No.", "answer": "Arr!"}
            for i in range(1, 12)]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir)}, "data": {"path": str(chat_jsonl if method == "sft" else data)},
                           "run_dir": str(tmp_path / "run"), "method": {"name": method, "max_completion_length": 16},
                           "train": {"max_length": 512}}, profile="cpu")
    (tmp_path / "run").mkdir()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds, _ = prepare_data(cfg, tok, tmp_path / "run", lambda e: None)
    n = longest_sequence(cfg, tok, ds)
    if method == "sft":
        assert n == max(len(x) for x in ds["input_ids"])
    else:
        longest = rows[-1]
        msgs = [{"role": "user", "content": longest["prompt"]}]
        prompt = len(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        assert n > prompt if method == "dpo" else n == prompt + 16
    assert n < 512
    if method == "sft":
        cfg.train.packing = True
        assert longest_sequence(cfg, tok, ds) is None  # packed rows fill max_length
    else:
        cfg.train.max_length = 8  # never past max_length (SFT rows are already cut to it at load)
        assert longest_sequence(cfg, tok, ds) == 8
