"""Reopening runs: `make_app(run_dir=...)` and the Runs screen open a run at its next stage; F1 opens help."""
from __future__ import annotations

import pytest

from tui_helpers import FAKE_HARDWARE, fake_shape_of
from edgetune.tui.app import make_app
from edgetune.tui.messages import ErrorRaised
from edgetune.tui.screens.export import ExportScreen
from edgetune.tui.screens.help import HelpScreen
from edgetune.tui.screens.runs import RunsScreen
from edgetune.tui.screens.train import TrainScreen
from edgetune.tui.widgets.verify_table import VerifyTable

pytestmark = pytest.mark.anyio


def app(**kw):
    return make_app(hardware=FAKE_HARDWARE, shape_of=fake_shape_of, runs_root="runs", **kw)


async def test_run_dir_opens_its_next_stage(runs_here):
    async with app(run_dir="runs/demo").run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert isinstance(pilot.app.screen, ExportScreen)  # adapter saved, no GGUF yet
        assert pilot.app.screen.query_one(VerifyTable).row_count == 2  # from report.json


async def test_runs_screen_enter_and_keys(runs_here):
    async with app(start_mode="runs").run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert isinstance(pilot.app.screen, RunsScreen)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(pilot.app.screen, TrainScreen) and pilot.app.screen.cfg.name == "demo"
        await pilot.press("f6", "enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ExportScreen)
        await pilot.press("f1")
        assert isinstance(pilot.app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, ExportScreen)


async def test_not_a_run_dir_is_a_titled_error(tmp_path, monkeypatch, recorder):
    monkeypatch.chdir(tmp_path)
    async with app(run_dir=tmp_path).run_test(size=(100, 30), message_hook=recorder) as pilot:
        await pilot.pause()
        assert isinstance(pilot.app.screen, RunsScreen)
        assert recorder.of(ErrorRaised)[-1].title == "Run directory problem"
