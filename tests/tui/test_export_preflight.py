"""The setup screen says whether the model can be exported, and asks before training one that cannot be exported
the way the config asks (GGUF): Cancel keeps the user on setup, "Train without GGUF export" trains with export.gguf
empty."""
from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Label

from families import build_family
from shared_data import write_chat_jsonl
from tui_helpers import FAKE_HARDWARE, fake_shape_of
from edgetune.tui.app import make_app
from edgetune.tui.messages import ModelInspected, TrainingFinished
from edgetune.tui.screens.confirm import ConfirmScreen

pytestmark = pytest.mark.anyio


def unexportable_gemma(tmp_path):
    """A Gemma 3 whose attention scale llama.cpp's gemma3 graph cannot reproduce (refused for GGUF)."""
    model = build_family("gemma3", tmp_path / "gemma3")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "query_pre_attn_scalar": 48}))
    return model


async def test_unexportable_model_asks_before_training(tmp_path, recorder):
    model, data = unexportable_gemma(tmp_path), write_chat_jsonl(tmp_path)
    app = make_app(hardware=FAKE_HARDWARE, shape_of=fake_shape_of, runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30), message_hook=recorder) as pilot:
        screen = app.screen
        for input_id, value in dict(model=str(model), data=str(data), max_steps="2", batch_size="2",
                                    max_length="64", run_name="g").items():
            screen.query_one(f"#{input_id}", Input).value = value
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert recorder.of(ModelInspected)[-1].support.gguf is not None
        line = str(screen.query_one("#export-support", Label).render())
        assert "GGUF no" in line and "query_pre_attn_scalar" in line

        await pilot.press("ctrl+t")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "cannot be exported to GGUF" in app.screen.question
        await pilot.press("escape")  # cancel: back on setup, nothing trained
        await pilot.pause()
        assert app.screen is screen and not recorder.of(TrainingFinished)

        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.click("#confirm-yes")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
    done = recorder.of(TrainingFinished)[-1]
    assert (done.stopped, done.failed, done.steps) == (False, False, 2)
    saved = (tmp_path / "runs" / "g" / "config.toml").read_text()
    assert "gguf = []" in saved
