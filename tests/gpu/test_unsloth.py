"""Unsloth engine on a CUDA GPU (run where one is lent: `pytest -m gpu tests/gpu`).

Deselected by default (pyproject addopts: -m 'not gpu'); skipped only where there is no GPU. On a GPU machine a
missing unsloth fails with the install line: the GPU checks must not pass by skipping.
"""
import importlib.util
import json

import pytest
import torch

from shared_data import SAMPLE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def unsloth_installed():
    if importlib.util.find_spec("unsloth") is None:
        pytest.fail('unsloth is not installed on this GPU machine: pip install "edgetune[unsloth]"', pytrace=False)


def sft_cfg(model_ref, data, run_dir, engine, steps=20, four_bit=True):
    from edgetune import config as C

    return C.resolve(None, {"model": {"ref": str(model_ref), "load_in_4bit": four_bit}, "data": {"path": str(data)},
                            "run_dir": str(run_dir),
                            "train": {"engine": engine, "max_steps": steps, "save_steps": 10, "batch_size": 4,
                                      "max_length": 512}}, profile="gpu-8gb")


def test_unsloth_qlora_sft_learns_and_merges(smollm2_dir, tmp_path):
    from edgetune.events import Collect, TrainStep
    from edgetune.merge import merge
    from edgetune.train import train


    data = SAMPLE / "pirate_chat.jsonl"
    events = Collect()
    torch.cuda.reset_peak_memory_stats()
    result = train(sft_cfg(smollm2_dir, data, tmp_path / "run", "unsloth"), events)
    steps = events.of(TrainStep)
    first, last = sum(s.loss for s in steps[:5]) / 5, sum(s.loss for s in steps[-5:]) / 5
    print(json.dumps({"engine": "unsloth", "first5_loss": first, "last5_loss": last,
                      "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20,
                      "tokens_per_s": steps[-1].tokens_per_s, "seconds": result.seconds}))
    assert last < first - 0.5
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    merged = merge(tmp_path / "run")
    assert merged.max_logit_diff < 0.5  # 16-bit merge of a 4-bit-trained adapter; exact-NF4 dequantization


def test_hf_engine_4bit_on_cuda_for_comparison(smollm2_dir, tmp_path):
    """The same run through transformers+PEFT+bitsandbytes, printed next to Unsloth's numbers."""

    from edgetune.events import Collect, TrainStep
    from edgetune.train import train

    events = Collect()
    torch.cuda.reset_peak_memory_stats()
    result = train(sft_cfg(smollm2_dir, SAMPLE / "pirate_chat.jsonl", tmp_path / "run", "hf"), events)
    steps = events.of(TrainStep)
    print(json.dumps({"engine": "hf", "first5_loss": sum(s.loss for s in steps[:5]) / 5,
                      "last5_loss": sum(s.loss for s in steps[-5:]) / 5,
                      "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20,
                      "tokens_per_s": steps[-1].tokens_per_s, "seconds": result.seconds}))
    assert steps[-1].loss < steps[0].loss


def test_auto_engine_picks_unsloth_on_cuda():
    from edgetune import config as C
    from edgetune.engines import select
    from edgetune.hardware import detect

    cfg = C.RunConfig()
    assert select("auto", detect(), cfg).name == "unsloth"


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_unsloth_preference_and_rl_methods_train(smollm2_dir, tmp_path, method):
    """DPO and GRPO through Unsloth's patched TRL trainers on the 8 GB profile's defaults."""
    from edgetune.events import Collect, TrainStep
    from edgetune.train import train


    data = SAMPLE / ("pirate_pairs.jsonl" if method == "dpo" else "pirate_prompts.jsonl")
    cfg = sft_cfg(smollm2_dir, data, tmp_path / "run", "unsloth", steps=10)
    cfg.method.name = method
    if method == "grpo":
        cfg.method.rewards, cfg.method.reward_pattern = ["regex_format"], "^Arr!"
    events = Collect()
    torch.cuda.reset_peak_memory_stats()
    result = train(cfg, events)
    steps = events.of(TrainStep)
    print(json.dumps({"engine": "unsloth", "method": method, "steps": len(steps), "seconds": result.seconds,
                      "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20,
                      "last": {k: v for k, v in steps[-1].extra.items() if isinstance(v, (int, float))}}))
    assert result.steps == 10 and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert "reward" in steps[-1].extra if method == "grpo" else "rewards/margins" in steps[-1].extra
