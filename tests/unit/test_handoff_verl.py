"""`edgetune handoff verl`: parquet in Verl's schema, a reward_fn.py that scores like edgetune's GRPO rewards, loaded
by Verl's own custom-reward loader, and main_ppo overrides whose keys exist in Verl's config."""
import importlib.util
import json
import math
import re
import shlex
from pathlib import Path

import pytest

from edgetune import config as C
from edgetune.cli import main
from edgetune.methods import rewards

REWARDS = ["answer_match=0.5", "regex_format", "numeric_match=2", "length_penalty=0.25", "repetition_penalty=0.1"]
ROWS = [{"prompt": "What is 6 x 7?", "answer": "42"},
        {"prompt": [{"role": "user", "content": "Name the red planet."}], "answer": "Mars"},
        {"prompt": "Half of 9?", "answer": 4.5}]
COMPLETIONS = ["Arr! <answer>42</answer>", "The answer is 42, 42, 42", "Arr! Mars", "#### 4.5", "", "Arr! " + "x " * 300]


@pytest.fixture
def handoff(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + '{"prompt": "no answer"}\n')
    config = tmp_path / "grpo.toml"
    config.write_text(f'name = "mathy"\n[model]\nref = "HuggingFaceTB/SmolLM2-360M-Instruct"\n[data]\npath = "{data}"\n'
                      f'system_prompt = "Be brief."\n[method]\nname = "grpo"\nrewards = {json.dumps(REWARDS)}\n'
                      "reward_pattern = '^Arr!'\nnum_generations = 8\nkl_beta = 0.02\n[lora]\nr = 32\nalpha = 64\n"
                      "[train]\nbatch_size = 16\nmax_steps = 100\n")
    out = tmp_path / "verl"
    assert main(["handoff", "verl", str(config), "--out", str(out)]) == 0
    return config, out


def test_parquet_reads_back_in_verls_schema(handoff):
    import pyarrow.parquet as pq

    _, out = handoff
    table = pq.read_table(out / "train.parquet")
    assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    rows = table.to_pylist()
    assert len(rows) == 3  # the row without an answer is rejected, as edgetune's GRPO would
    assert rows[0]["data_source"] == "edgetune/mathy" and rows[0]["ability"] == "edgetune"
    assert rows[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 x 7?"}]
    assert [r["reward_model"] for r in rows] == [{"style": "rule", "ground_truth": g} for g in ("42", "Mars", "4.5")]
    assert rows[1]["extra_info"]["index"] == 1 and rows[1]["extra_info"]["question"] == "Name the red planet."
    assert pq.read_table(out / "val.parquet").num_rows == 3


def edgetune_scores(completion: str, answer: str, cfg) -> float:
    """What edgetune's GRPO gives one completion: TRL sums reward x weight over the functions (NaN-safe)."""
    funcs = rewards.build(REWARDS, cfg)
    total = 0.0
    for r in funcs:
        v = r.func(prompts=None, completions=[[{"role": "assistant", "content": completion}]], answer=[answer])[0]
        total += 0.0 if v is None else r.weight * v
    return total


def verl_loader():
    """Verl's own loader (verl/utils/import_utils.py, as get_custom_reward_fn calls it), from Verl's source that
    tests/fetch_assets.py unpacks (importing the verl package needs Ray and vLLM, which a CPU machine does not have)."""
    from fetched import require_asset

    root = require_asset("verl/verl")
    mod_spec = importlib.util.spec_from_file_location("verl_import_utils", root / "utils" / "import_utils.py")
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.load_extern_object, root


def test_reward_fn_scores_like_edgetune_and_verl_loads_it(handoff):
    import pyarrow.parquet as pq

    config, out = handoff
    cfg = C.resolve(config)
    load_extern_object, _ = verl_loader()
    compute_score = load_extern_object(module_path=str(out / "reward_fn.py"), object_name="compute_score")
    rows = pq.read_table(out / "train.parquet").to_pylist()
    seen = set()
    for row in rows:
        for c in COMPLETIONS:
            got = compute_score(data_source=row["data_source"], solution_str=c,
                                ground_truth=row["reward_model"]["ground_truth"], extra_info=row["extra_info"])
            want = edgetune_scores(c, row["reward_model"]["ground_truth"], cfg)
            assert math.isclose(got, want, abs_tol=1e-9), (c, row, got, want)
            seen.add(round(got, 6))
    assert len(seen) > 5  # the fixtures exercise the rewards, not one constant
    # the call without extra_info (Verl's signature default) works too
    assert compute_score("edgetune/mathy", "Arr! <answer>42</answer>", "42") == pytest.approx(
        edgetune_scores("Arr! <answer>42</answer>", "42", cfg))


def test_run_script_overrides_exist_in_verls_config(handoff):
    import yaml

    _, out = handoff
    _, root = verl_loader()
    verl_cfg = yaml.safe_load((root / "trainer" / "config" / "_generated_ppo_trainer.yaml").read_text())
    script = (out / "run_verl.sh").read_text()
    overrides = re.findall(r"^  ([a-z_.]+)=(.*?) \\$", script, re.M)
    assert len(overrides) > 30
    for key, _ in overrides:
        node = verl_cfg
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key}: not a key of verl's ppo_trainer config"
            node = node[part]
    values = {k: shlex.split(v)[0] if v else "" for k, v in overrides}
    assert values["algorithm.adv_estimator"] == "grpo"
    assert values["actor_rollout_ref.model.lora_rank"] == "32" and values["actor_rollout_ref.model.lora_alpha"] == "64"
    assert values["actor_rollout_ref.rollout.n"] == "8" and values["data.train_batch_size"] == "2"  # 16 completions / 8
    assert values["actor_rollout_ref.actor.kl_loss_coef"] == "0.02" and values["actor_rollout_ref.actor.use_kl_loss"] == "True"
    assert values["actor_rollout_ref.model.path"] == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert values["reward.custom_reward_function.name"] == "compute_score"
    assert values["trainer.total_training_steps"] == "100"


def test_a_run_without_grpo_is_refused(tmp_path, chat_jsonl, capsys):
    config = tmp_path / "sft.toml"
    config.write_text(f'[data]\npath = "{chat_jsonl}"\n')
    assert main(["handoff", "verl", str(config), "--out", str(tmp_path / "o")]) == 1
    assert "GRPO" in capsys.readouterr().err


def test_staged_run_hands_off_its_merged_sft_stage(tiny_model_dir, chat_jsonl, tmp_path):
    from edgetune.stages import stage_config, stage_dirs
    from edgetune.train import train

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    run = tmp_path / "run"
    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False}, "run_dir": str(run),
                           "name": "staged", "data": {"path": str(chat_jsonl), "stage_paths": [f"grpo={prompts}"]},
                           "method": {"stages": ["sft", "grpo"]}, "train": {"max_steps": 2}}, profile="cpu")
    run.mkdir()
    cfg.save(run / "config.toml")
    (method, sft_dir), _ = stage_dirs(cfg)
    train(stage_config(cfg, method, sft_dir))  # only the SFT stage has run: GRPO goes to Verl
    from edgetune.handoff_verl import write_verl_handoff

    summary = write_verl_handoff(run, tmp_path / "verl")
    assert summary["model"] == str((sft_dir / "merged").resolve()) and (sft_dir / "merged" / "config.json").is_file()
    assert f"actor_rollout_ref.model.path={summary['model']}" in (tmp_path / "verl" / "run_verl.sh").read_text()
    assert summary["rows"] == 3
