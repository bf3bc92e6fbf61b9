"""Ctrl-C writes a checkpoint and exits 130; --resume continues the step counter and the loss curve."""
import json
import os
import signal
import subprocess
import sys
import time


def step_lines(path):
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["event"] == "TrainStep"]


def edgetune(*args):
    return [sys.executable, "-m", "edgetune.cli", *args]


def test_sigint_then_resume(tiny_model_dir, chat_jsonl, tmp_path):
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    common = ["--model", str(tiny_model_dir), "--data", str(chat_jsonl), "--run-dir", str(run), "--no-4bit",
              "--save-steps", "1000", "--lr", "3e-3", "--batch-size", "4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(edgetune("train", "--max-steps", "400", *common), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def learned() -> bool:  # interrupt only once the loss has clearly moved, so "continues" is measurable
        lines = step_lines(metrics)
        return len(lines) >= 10 and lines[-1]["loss"] < lines[0]["loss"] - 0.6

    deadline = time.time() + 240
    while time.time() < deadline and not learned() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Interrupted" in err and "--resume" in err
    before = step_lines(metrics)
    stopped = before[-1]["step"]
    ckpts = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in ckpts] == [f"checkpoint-{stopped}"], "the interrupt checkpoint is the last step run"
    assert not (run / "adapter").exists()

    resumed = subprocess.run(edgetune("train", "--resume", "--run-dir", str(run)), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = step_lines(metrics)[len(before):]
    assert after[0]["step"] == stopped + 1, "step counter continues"
    assert after[-1]["step"] == 400
    first_loss = before[0]["loss"]
    assert after[0]["loss"] < first_loss - 0.3, "loss continues from where it was, not from scratch"
    assert abs(after[0]["loss"] - before[-1]["loss"]) < 1.0
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
