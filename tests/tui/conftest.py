"""Fixtures for the TUI tests; the pinned hardware, model shape and message recorder are in tui_helpers.py."""
from __future__ import annotations

import json

import pytest

from edgetune import config as C
from tui_helpers import RUN, Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio through anyio's pytest plugin (anyio comes with httpx/huggingface_hub)."""
    return "asyncio"


@pytest.fixture
def runs_here(tmp_path, monkeypatch):
    """runs/demo in a temp cwd: trained 4 steps with a checkpoint, adapter, loss history and an export report."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / RUN
    cfg = C.resolve(None, {"model": {"ref": "default"}, "data": {"path": "data/chat.jsonl"}, "name": RUN,
                           "run_dir": f"runs/{RUN}", "train": {"max_steps": 4}}, profile="cpu")
    cfg.save(run / "config.toml")
    (run / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (run / "adapter").mkdir()
    losses = [3.9, 3.1, 2.4, 1.8]
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"event": "TrainStep", "step": i + 1, "max_steps": 4, "loss": x}) + "\n" for i, x in enumerate(losses)))
    files = [{"type": t, "size_bytes": s, "top1": a, "mean_kld": k, "token_ids_identical": True, "stops_at_eos": True,
              "passed": True, "kept": t != "f16"} for t, s, a, k in (("f16", 271e6, 1.0, 0.0), ("q8_0", 145e6, 0.991, 0.0031))]
    (run / "report.json").write_text(json.dumps({"export": {"files": files}}))
    return run
