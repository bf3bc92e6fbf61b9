"""`edgetune launch-config`: the files for a rented box, and run.sh running as written on 2 CPU processes (gloo)."""
import json
import os
import signal
import subprocess
import sys
import time

import tomllib

from edgetune.cli import main


def test_run_sh_trains_on_two_cpu_processes(tiny_model_dir, chat_jsonl, tmp_path, capsys):
    config = tmp_path / "my.toml"
    config.write_text(f'name = "boxrun"\n[model]\nref = "{tiny_model_dir}"\nload_in_4bit = false\n'
                      f'[data]\npath = "{chat_jsonl}"\n[train]\nmax_steps = 2\nbatch_size = 2\nsave_steps = 1000\n')
    out = tmp_path / "box"
    assert main(["launch-config", str(config), "--out", str(out), "--nproc", "2"]) == 0, capsys.readouterr().err
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["data"]["path"] == f"data/{chat_jsonl.name}" and (out / "data" / chat_jsonl.name).is_file()
    assert cfg["run_dir"] == "runs/boxrun" and cfg["train"]["batch_size"] == 2 and cfg["train"]["nproc"] == 2

    from accelerate.commands.config.config_args import load_config_from_file

    ddp, fsdp = (load_config_from_file(str(out / f"accelerate_{m}.yaml")) for m in ("ddp", "fsdp"))
    assert str(ddp.distributed_type).endswith("MULTI_GPU") and ddp.num_processes == 2
    assert str(fsdp.distributed_type).endswith("FSDP") and fsdp.fsdp_config["fsdp_version"] == 2

    # `accelerate` on PATH is the one of the Python under test (as `pip install accelerate` makes it on the box)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "accelerate").write_text(f'#!/bin/sh\nexec {sys.executable} -m accelerate.commands.accelerate_cli "$@"\n')
    (shim / "accelerate").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "NPROC": "2", "HF_HUB_OFFLINE": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    done = subprocess.run([str(out / "run.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "effective batch 4 = 2 per device x 1 accumulation x 2 processes" in done.stderr
    run = out / "runs" / "boxrun"
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"TrainStep"' in x]
    assert [s["step"] for s in steps] == [1, 2]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    again = subprocess.run([str(out / "run.sh"), "--max-steps", "3"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)  # run again: it resumes from the checkpoint it left
    assert again.returncode == 0, again.stderr[-3000:]
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"TrainStep"' in x]
    assert [s["step"] for s in steps] == [1, 2, 3]

    # a terminal's Ctrl-C reaches the launcher and every worker (and the launcher passes it on again): one stop,
    # every rank after the same step, one checkpoint; torchrun's agent then exits non-zero (its own behaviour)
    proc = subprocess.Popen([str(out / "run.sh"), "--max-steps", "100000"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(step_numbers(run)) < 13:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    stopped = step_numbers(run)[-1]
    assert proc.returncode != 0 and err.count("Interrupted") == 1, err[-3000:]
    assert f"checkpoint-{stopped}" in [c.name for c in (run / "checkpoints").glob("checkpoint-*")]
    assert stopped < 100000 and step_numbers(run) == list(range(1, stopped + 1))


def step_numbers(run):
    path = run / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(x)["step"] for x in text.splitlines() if '"TrainStep"' in x]


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    code = main(["launch-config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")])
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())  # the error box wraps long paths
    assert code == 1 and "no such config file" in err
