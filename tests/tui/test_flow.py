"""The real flow on the tiny random model, driven with Pilot: setup (dataset checked), a short training run,
export to GGUF Q8_0, one chat reply. Assertions are on the messages the app posts; waits are on workers."""
from __future__ import annotations

import pytest
from textual.widgets import Input

from tui_helpers import FAKE_HARDWARE, export_from_screen
from edgetune import runs
from edgetune.tui.app import make_app
from edgetune.tui.messages import (ChatOpened, ChatReplied, ErrorRaised, TrainingFinished,
                                   TrainingStepped, ValidationFinished)
from edgetune.tui.screens.chat import ChatScreen
from edgetune.tui.screens.train import TrainScreen
from edgetune.tui.widgets.verify_table import VerifyTable

SIZE = (100, 30)
pytestmark = pytest.mark.anyio


async def fill(pilot, **values) -> None:
    for input_id, value in values.items():
        pilot.app.screen.query_one(f"#{input_id}", Input).value = value
    await pilot.pause()


async def test_setup_train_export_chat(tiny_model_dir, chat_jsonl, tmp_path, recorder):
    app = make_app(hardware=FAKE_HARDWARE, runs_root=tmp_path / "runs", chat_max_tokens=12)
    async with app.run_test(size=SIZE, message_hook=recorder) as pilot:
        # setup: model and dataset paths; the dataset check runs in a worker
        await fill(pilot, model=str(tiny_model_dir), data=str(chat_jsonl))
        await app.workers.wait_for_complete()
        await pilot.pause()
        checked = recorder.of(ValidationFinished)[-1]
        assert checked.error is None and checked.report.n_valid == 24 and checked.report.format == "messages"
        text, spans = checked.example
        assert spans and "Arr! Word 0 it be." in text[spans[0][0]:spans[0][1]]  # the trained part is the reply
        assert "usable" in str(app.screen.query_one("#preview").render())
        assert "Memory estimate" in str(app.screen.query_one("#memory").render())

        # train: 4 steps
        await fill(pilot, max_steps="4", run_name="tui")
        await pilot.press("ctrl+t")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, TrainScreen)
        done = recorder.of(TrainingFinished)[-1]
        assert (done.stopped, done.failed, done.steps) == (False, False, 4), recorder.of(ErrorRaised)
        assert [m.event.step for m in recorder.of(TrainingStepped)] == [1, 2, 3, 4]
        run_dir = tmp_path / "runs" / "tui"
        assert (run_dir / runs.ADAPTER).is_dir() and app.run_dir == run_dir

        # export: Q8_0 only (the tiny random model never stops at EOS: reported, not fatal)
        await pilot.press("e")
        await pilot.pause()
        exported = await export_from_screen(app, pilot, recorder, "q8_0")
        assert [r["type"] for r in exported.result.results] == ["f16", "q8_0"]
        assert exported.result.results[1]["stops_at_eos"] is False  # expected for a random model, only reported
        assert app.screen.query_one(VerifyTable).row_count == 2

        # chat: tuned Q8_0 (llama.cpp) beside the base (transformers), one reply each
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        assert {m.side for m in recorder.of(ChatOpened)} == {"base", "tuned"}
        assert "llamacpp" in next(m.label for m in recorder.of(ChatOpened) if m.side == "tuned")
        await pilot.press(*"Say the word number 1.", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        replies = {m.side: m for m in recorder.of(ChatReplied)}
        assert set(replies) == {"base", "tuned"} and replies["tuned"].text
        assert not recorder.of(ErrorRaised)


async def test_start_without_data_shows_a_titled_error(tmp_path, recorder):
    from tui_helpers import fake_shape_of

    app = make_app(hardware=FAKE_HARDWARE, runs_root=tmp_path / "runs", shape_of=fake_shape_of)
    async with app.run_test(size=SIZE, message_hook=recorder, notifications=True) as pilot:
        await pilot.press("ctrl+t")
        await pilot.pause()
        error = recorder.of(ErrorRaised)[-1]
        assert error.title == "Invalid configuration" and "data.path" in error.message
        assert [n.title for n in app._notifications] == ["Invalid configuration"]
        assert not (tmp_path / "runs").exists()
