"""`edgetune train --nproc 2` on the embedded SmolLM2-135M: two gloo processes, data parallel.

One adapter and one metrics file (rank 0 writes), the loss of a 1-process run with the same effective batch and
seed, and a stop mid-run (SIGTERM to the launcher, as `kill` sends) that --resume continues.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared_data import write_chat_jsonl

pytestmark = pytest.mark.integration


def steps(run):
    path = run / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    return [r for r in rows if r["event"] == "TrainStep"]


def edgetune(*args):
    return [sys.executable, "-m", "edgetune.cli", "train", *map(str, args)]


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def common(tmp_path_factory, smollm2_dir):
    data = write_chat_jsonl(tmp_path_factory.mktemp("mp_data"))
    return ["--model", "default", "--data", data, "--profile", "cpu", "--lr", "1e-3", "--max-length", "128",
            "--save-steps", "1000", "--lora-r", "8"]


def test_two_processes_match_one(common, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run(edgetune(*common, "--max-steps", 3, "--batch-size", 4, "--run-dir", one), env=ENV,
                        capture_output=True, text=True, timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run(edgetune(*common, "--max-steps", 3, "--batch-size", 2, "--nproc", 2, "--run-dir", two),
                        env=ENV, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "effective batch 4 = 2 per device x 1 accumulation x 2 processes" in r2.stdout + r2.stderr
    assert "[rank1]" not in r2.stderr and r2.stdout.count("trained 3 steps") == 1  # rank 1 stays quiet
    a, b = [s["loss"] for s in steps(one)], [s["loss"] for s in steps(two)]
    assert [s["step"] for s in steps(two)] == [1, 2, 3], "one metrics file, one line per step (rank 0's)"
    assert all(abs(x - y) < 0.02 for x, y in zip(a, b)), (a, b)
    assert (two / "adapter" / "adapter_model.safetensors").is_file()
    ckpt = two / "checkpoints" / "checkpoint-3"
    assert sorted(p.name for p in ckpt.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert not list(two.glob("**/.*.tmp"))


def test_kill_then_resume_on_two_processes(common, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(edgetune(*common, "--max-steps", 8, "--batch-size", 2, "--nproc", 2, "--run-dir", run),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(steps(run)) < 2 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert err.count("Interrupted") == 1 and "--resume" in err and "Traceback" not in err
    stopped = steps(run)[-1]["step"]
    assert [c.name for c in (run / "checkpoints").glob("checkpoint-*")] == [f"checkpoint-{stopped}"]
    assert not (run / "adapter").exists()
    resumed = subprocess.run(edgetune("--resume", "--run-dir", run), env=ENV, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [s["step"] for s in steps(run)] == list(range(1, 9)), "the step counter continues where it stopped"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert "2 processes" in resumed.stdout  # the run's config keeps train.nproc
