"""`--nproc` refuses up front what cannot run on several processes, states the effective batch, and trains QLoRA and
GRPO on 2 gloo processes. (SmolLM2 on 2 processes vs 1, stop and resume: tests/integration/test_multiproc_smollm2.py;
run.sh under accelerate launch: tests/unit/test_launch_config.py.)"""
import pytest

from edgetune import config as C
from edgetune import distributed
from edgetune.cli import main


def test_refusals_come_before_any_process_starts(chat_jsonl, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(chat_jsonl), "--nproc", "2", "--engine", "unsloth", "--run-dir", str(run)])
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert code == 1 and "train.engine" in err and "unsloth" in err and not run.exists()
    fsdp = tmp_path / "fsdp.toml"
    fsdp.write_text('[model]\nload_in_4bit = true\n[train]\ndistributed = "fsdp"\n')
    code = main(["train", "-c", str(fsdp), "--data", str(chat_jsonl), "--nproc", "2", "--run-dir", str(run)])
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert code == 1 and "fsdp" in err and "load_in_4bit" in err
    code = main(["train", "--data", str(chat_jsonl), "--nproc", "0", "--run-dir", str(run)])
    assert code == 1 and "train.nproc" in capsys.readouterr().err


def test_effective_batch_counts_every_process(monkeypatch):
    cfg = C.resolve(None, {"data": {"path": "x.jsonl"}, "train": {"batch_size": 3, "grad_accum": 2, "nproc": 4}})
    assert distributed.effective_batch_note(cfg) == "effective batch 6 = 3 per device x 2 accumulation x 1 process"
    monkeypatch.setenv("WORLD_SIZE", "8")  # inside a launch, the launcher's process count is what runs
    monkeypatch.setenv("RANK", "3")
    assert distributed.effective_batch_note(cfg).startswith("effective batch 48 ")
    assert not distributed.is_main() and distributed.inside_launch()


@pytest.mark.parametrize("method", ["sft-qlora", "grpo"])
def test_two_gloo_processes_train_qlora_and_grpo(method, tiny_model_dir, chat_jsonl, tmp_path):
    import json
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    args = ["--model", str(tiny_model_dir), "--max-steps", "2", "--profile", "cpu", "--batch-size", "2",
            "--nproc", "2", "--run-dir", str(run)]
    if method == "grpo":
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"{i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(6)))
        args += ["--data", str(prompts), "--method", "grpo", "--reward", "length_penalty", "--num-generations", "2",
                 "--no-4bit"]
    else:
        args += ["--data", str(chat_jsonl), "--4bit"]
    done = subprocess.run([sys.executable, "-m", "edgetune.cli", "train", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"TrainStep"' in x]
    assert [s["step"] for s in steps] == [1, 2] and (run / "adapter" / "adapter_model.safetensors").is_file()
    if method == "grpo":
        assert all("reward" in s for s in steps)
