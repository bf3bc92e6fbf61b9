"""Stop writes a resumable checkpoint, Resume continues it, and quitting mid-run stops through the stopper."""
from __future__ import annotations

import pytest
from textual.widgets import Input

from tui_helpers import FAKE_HARDWARE
from edgetune import runs
from edgetune.tui.app import make_app
from edgetune.tui.messages import CheckpointWritten, ErrorRaised, TrainingFinished, TrainingStepped

pytestmark = pytest.mark.anyio
SIZE = (100, 30)
STEPS = "400"  # far more than can run before the stop lands (tiny model: ~10-20 ms a step)


async def start_training(pilot, tiny_model_dir, chat_jsonl) -> None:
    screen = pilot.app.screen
    for input_id, value in dict(model=str(tiny_model_dir), data=str(chat_jsonl), max_steps=STEPS,
                                run_name="stoppable").items():
        screen.query_one(f"#{input_id}", Input).value = value
    await pilot.pause()
    await pilot.press("ctrl+t")


async def test_stop_then_resume(tiny_model_dir, chat_jsonl, tmp_path, recorder):
    app = make_app(hardware=FAKE_HARDWARE, runs_root=tmp_path / "runs")
    async with app.run_test(size=SIZE, message_hook=recorder) as pilot:
        await start_training(pilot, tiny_model_dir, chat_jsonl)
        await recorder.wait_for(TrainingStepped)
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        stopped = recorder.of(TrainingFinished)[-1]
        assert stopped.stopped and not stopped.failed, recorder.of(ErrorRaised)
        assert stopped.steps < int(STEPS)
        ckpt = runs.last_checkpoint(tmp_path / "runs" / "stoppable")
        assert ckpt is not None and any(m.event.reason == "interrupt" for m in recorder.of(CheckpointWritten))

        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        done = recorder.of(TrainingFinished)[-1]
        assert (done.stopped, done.steps) == (False, int(STEPS)), recorder.of(ErrorRaised)
        resumed = [m.event.step for m in recorder.of(TrainingStepped)]
        assert resumed[-1] == int(STEPS) and int(ckpt.name.split("-")[-1]) + 1 in resumed


async def test_quit_mid_run_leaves_a_resumable_checkpoint(tiny_model_dir, chat_jsonl, tmp_path, recorder):
    app = make_app(hardware=FAKE_HARDWARE, runs_root=tmp_path / "runs")
    async with app.run_test(size=SIZE, message_hook=recorder) as pilot:
        await start_training(pilot, tiny_model_dir, chat_jsonl)
        await recorder.wait_for(TrainingStepped)
        await pilot.press("ctrl+q")
        await recorder.wait_for(TrainingFinished)
        await app.workers.wait_for_complete()
    assert app.return_code == 0
    assert recorder.of(TrainingFinished)[-1].stopped
    assert runs.last_checkpoint(tmp_path / "runs" / "stoppable") is not None
