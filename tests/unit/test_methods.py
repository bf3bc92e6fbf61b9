"""DPO, KTO and GRPO on a tiny random model (CPU, real TRL trainers), multi-stage runs, rewards, bad preference rows."""
import json
import math
import tomllib
from pathlib import Path

import pytest

from edgetune import config as C
from edgetune.errors import DataError, TrainError
from edgetune.events import Collect, TrainStep
from edgetune.train import train

PREF = Path(__file__).parent.parent / "data" / "preference"


def write_rows(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def pairs(tmp_path):
    return write_rows(tmp_path / "pairs.jsonl", [{"prompt": f"Say {i}", "chosen": f"Arr! {i}", "rejected": f"No {i}."}
                                                  for i in range(16)])


def cfg_for(model_dir, data, run_dir, method, **method_kw):
    return C.resolve(None, {"model": {"ref": str(model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                            "run_dir": str(run_dir), "method": {"name": method, **method_kw},
                            "train": {"max_steps": 4, "learning_rate": 5e-3, "batch_size": 4}}, profile="cpu")


def test_dpo_raises_margins(tiny_model_dir, tmp_path):
    events = Collect()
    result = train(cfg_for(tiny_model_dir, pairs(tmp_path), tmp_path / "run", "dpo"), events)
    steps = events.of(TrainStep)
    assert result.steps == 4 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert steps[-1].extra["rewards/margins"] > steps[0].extra["rewards/margins"]
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["format"] == "dpo" and report["n_valid"] == 16


def test_kto_trains(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Say {i}", "completion": ("Arr! " if i % 2 else "No ") + str(i), "label": bool(i % 2)}
            for i in range(16)]
    events = Collect()
    result = train(cfg_for(tiny_model_dir, write_rows(tmp_path / "kto.jsonl", rows), tmp_path / "run", "kto"), events)
    first, last = events.of(TrainStep)[0].extra, events.of(TrainStep)[-1].extra
    assert result.steps == 4 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    # KTO pushes desirable completions up and undesirable ones down relative to the reference (the adapter off)
    assert last["rewards/margins"] > first["rewards/margins"]
    assert last["rewards/chosen"] > 0 > last["rewards/rejected"]


def test_grpo_logs_rewards(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]
    events = Collect()
    cfg = cfg_for(tiny_model_dir, write_rows(tmp_path / "g.jsonl", rows), tmp_path / "run", "grpo",
                  rewards=["answer_match", "length_penalty=0.1"], num_generations=2, max_completion_length=8)
    cfg.train.max_steps = 2
    train(cfg, events)
    step = events.of(TrainStep)[-1]
    assert "reward" in step.extra and any(k.startswith("rewards/") for k in step.extra)


@pytest.mark.parametrize("loss_type,level", [(t, "token") for t in C.GRPO_LOSS_TYPES] + [("grpo", "sequence")])
def test_grpo_variants_train(tiny_model_dir, tmp_path, loss_type, level):
    """Every loss type edgetune offers (and GSPO: sequence-level ratios) runs 2 real GRPO steps, and TRL got it."""
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]
    cfg = cfg_for(tiny_model_dir, write_rows(tmp_path / "g.jsonl", rows), tmp_path / "run", "grpo",
                  rewards=["length_penalty"], num_generations=2, max_completion_length=6, loss_type=loss_type,
                  importance_sampling_level=level)
    cfg.train.max_steps = 2
    events = Collect()
    result = train(cfg, events)
    assert result.steps == 2 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert all(math.isfinite(s.loss) for s in events.of(TrainStep))
    import torch

    args = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert (args.loss_type, args.importance_sampling_level, args.scale_rewards) == (loss_type, level, "group")


def test_grpo_variant_choices_match_trl():
    """The loss types edgetune offers are the ones the installed TRL documents, and its default is TRL's."""
    import dataclasses
    import re

    from trl import GRPOConfig

    f = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    supported = f["loss_type"].metadata["help"].split("Supported values are", 1)[1].split(".", 1)[0]
    assert set(re.findall(r"'(\w+)'", supported)) == set(C.GRPO_LOSS_TYPES)
    assert C.MethodConfig().loss_type == f["loss_type"].default
    assert C.MethodConfig().importance_sampling_level == f["importance_sampling_level"].default
    assert C.MethodConfig().scale_rewards == f["scale_rewards"].default


def test_grpo_variant_is_validated_and_mispairings_are_said():
    from edgetune.errors import ConfigError
    from edgetune.methods.grpo import variant_notes

    with pytest.raises(ConfigError, match=r"method.loss_type.*'drgrpo'.*dr_grpo"):
        C.resolve(None, {"data": {"path": "x.jsonl"}, "method": {"name": "grpo", "loss_type": "drgrpo"}})
    with pytest.raises(ConfigError, match=r"method.importance_sampling_level.*token, sequence"):
        C.resolve(None, {"data": {"path": "x.jsonl"}, "method": {"name": "grpo", "importance_sampling_level": "seq"}})
    assert "loss_type = \"grpo\"" in variant_notes("dapo", "sequence")[0]
    assert variant_notes("grpo", "sequence") == [] and variant_notes("dapo", "token") == []


def raising_reward(completions, **_):
    raise ValueError("boom")


@pytest.mark.parametrize("on_error", ["skip", "stop"])
def test_reward_that_raises(tiny_model_dir, tmp_path, on_error):
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]
    cfg = cfg_for(tiny_model_dir, write_rows(tmp_path / "g.jsonl", rows), tmp_path / "run", "grpo",
                  rewards=["test_methods:raising_reward"], num_generations=2, max_completion_length=4,
                  on_reward_error=on_error)
    cfg.train.max_steps = 1
    events = Collect()
    if on_error == "stop":
        with pytest.raises(TrainError, match="raising_reward.*raised ValueError: boom"):
            train(cfg, events)
    else:
        train(cfg, events)
        assert any("boom" in getattr(e, "text", "") for e in events.events)


def test_multistage_sft_then_dpo(tiny_model_dir, chat_jsonl, tmp_path):
    cfg = cfg_for(tiny_model_dir, chat_jsonl, tmp_path / "run", "sft", stages=["sft", "dpo"])
    cfg.data.stage_paths = [f"dpo={pairs(tmp_path)}"]
    cfg.stage = {"dpo": {"train": {"max_steps": 2}}}  # as `[stage.dpo.train]` in a config file
    result = train(cfg)
    run = tmp_path / "run"
    assert result.steps == 2 and C.from_dict(tomllib.loads((run / "stages" / "1-sft" / "config.toml").read_text())).train.max_steps == 4
    assert (run / "stages" / "1-sft" / "adapter").is_dir() and (run / "stages" / "2-dpo" / "adapter").is_dir()
    assert (run / "stages" / "2-dpo" / "metrics.jsonl").is_file() and (run / "stages" / "1-sft" / "config.toml").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and result.adapter_dir == run / "adapter"
    # the DPO stage continued the SFT adapter, not a fresh one
    from safetensors.torch import load_file

    sft = load_file(run / "stages" / "1-sft" / "adapter" / "adapter_model.safetensors")
    dpo = load_file(run / "adapter" / "adapter_model.safetensors")
    assert set(sft) == set(dpo) and any((sft[k] - dpo[k]).abs().sum() > 0 for k in sft)
    # running again skips finished stages
    events = Collect()
    train(cfg, events)
    assert sum("already finished" in getattr(e, "text", "") for e in events.events) == 2


def test_bad_preference_rows_name_file_line_and_fix():
    from edgetune.data.preference import load_method_rows

    rows, problems = load_method_rows(str(PREF / "dpo_bad.jsonl"), "dpo")
    text = "\n".join(map(str, problems))
    assert len(rows) == 1
    for needle in ("dpo_bad.jsonl:2: missing `rejected`", "dpo_bad.jsonl:3: `rejected` is empty",
                   "dpo_bad.jsonl:4: `chosen` and `rejected` are identical", "dpo_bad.jsonl:5: `chosen` is",
                   "dpo_bad.jsonl:6: the prompt's last message is not from the user"):
        assert needle in text
    assert all("fix:" in str(p) for p in problems)


def test_no_usable_rows_is_a_data_error(tmp_path):
    from edgetune.data.preference import load_method_rows

    bad = write_rows(tmp_path / "b.jsonl", [{"prompt": "x", "chosen": "same", "rejected": "same"}])
    with pytest.raises(DataError, match="no usable dpo rows"):
        load_method_rows(str(bad), "dpo")


def test_reward_library():
    from edgetune.methods.rewards import (answer_match, json_valid, make_numeric_match, make_regex_format,
                                          repetition_penalty)

    assert answer_match(["<answer>42</answer>", "it is 41"], ["42", "42"]) == [1.0, 0.0]
    assert make_numeric_match(1e-3)(["#### 3.0001"], ["3"]) == [1.0]
    assert make_regex_format(r"^Arr!")([[{"role": "assistant", "content": "Arr! yes"}], "no"]) == [1.0, 0.0]
    assert json_valid(['{"a": 1}', "```json\n[1]\n```", "{bad"]) == [1.0, 1.0, 0.0]
    assert repetition_penalty(["Arr! Rome be the capital, matey.", "Arr! Arr! Arr! Arr!", ""]) == [0.0, -0.75, 0.0]


def test_preference_eval_before_and_after_dpo(tiny_model_dir, tmp_path, capsys):
    from edgetune.cli import main

    data = pairs(tmp_path)
    cfg = cfg_for(tiny_model_dir, data, tmp_path / "run", "dpo")
    cfg.train.max_steps = 8
    train(cfg)
    held_out = write_rows(tmp_path / "held.jsonl", [{"prompt": f"Say {i}", "chosen": f"Arr! {i}", "rejected": f"No {i}."}
                                                    for i in range(16, 24)])
    assert main(["eval", str(tmp_path / "run"), "--data", str(held_out)]) == 0
    out = capsys.readouterr().out
    assert "preference accuracy" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())["preference_eval"]["targets"]
    base, tuned = report[0], report[1]
    assert tuned["mean_margin"] > base["mean_margin"] and tuned["preference_accuracy"] >= base["preference_accuracy"]


def test_system_prompt_goes_before_preference_prompts(tmp_path):
    from edgetune.data.preference import load_method_rows

    own = [{"role": "system", "content": "Own."}, {"role": "user", "content": "Hi"}]
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "Hi", "answer": "Arr!"}, {"prompt": own, "answer": "Arr!"}])
    rows, _ = load_method_rows(str(path), "grpo", system_prompt="Be Pip the pirate.")
    assert rows[0]["prompt"] == [{"role": "system", "content": "Be Pip the pirate."}, {"role": "user", "content": "Hi"}]
    assert rows[1]["prompt"] == own  # a row's own system message wins, as for SFT rows


def test_cli_progress_shows_method_metrics():
    from edgetune.console import step_line

    grpo = TrainStep(3, 30, 0.1, 1e-4, 0.5, extra={"reward": 0.85, "reward_std": 0.2, "rewards/regex_format/mean": 0.9,
                                                     "rewards/repetition_penalty/mean": -0.05, "kl": 0.0123,
                                                     "completions/mean_length": 18.2})
    line = step_line(grpo)
    assert "reward 0.850±0.20" in line and "(regex_format 0.90, repetition_penalty -0.05)" in line
    assert "kl 0.0123" in line and "len 18" in line
    dpo = TrainStep(3, 30, 0.6, extra={"rewards/chosen": 0.1, "rewards/rejected": -0.2, "rewards/margins": 0.3,
                                       "rewards/accuracies": 0.75})
    assert "margin 0.300  acc 0.75  chosen 0.100  rejected -0.200" in step_line(dpo)
