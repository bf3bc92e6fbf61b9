"""Setup with a preference method: the dataset is checked as dpo rows, the estimate counts chosen + rejected,
and the saved config names the method (and stages)."""
from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Select

from tui_helpers import FAKE_HARDWARE, fake_shape_of
from edgetune import config as C
from edgetune.tui.app import make_app
from edgetune.tui.messages import ValidationFinished

pytestmark = pytest.mark.anyio
DPO_GOOD = Path(__file__).parents[1] / "data" / "preference" / "dpo_good.jsonl"


async def test_dpo_rows_checked_and_config_saved(tiny_model_dir, tmp_path, recorder):
    app = make_app(hardware=FAKE_HARDWARE, shape_of=fake_shape_of, runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30), message_hook=recorder, notifications=True) as pilot:
        await app.workers.wait_for_complete()
        sft_estimate = str(app.screen.query_one("#memory").render())
        screen = app.screen
        screen.query_one("#model", Input).value = str(tiny_model_dir)
        screen.query_one("#method", Select).value = "dpo"
        screen.query_one("#data", Input).value = str(DPO_GOOD)
        screen.query_one("#run_name", Input).value = "pairs"
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        checked = recorder.of(ValidationFinished)[-1]
        assert checked.error is None and checked.report.method == "dpo" and checked.report.n_valid >= 1
        assert "dpo rows" in str(screen.query_one("#preview").render())

        screen.query_one("#model", Input).value = "default"  # the pinned shape again, to compare estimates
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert str(screen.query_one("#memory").render()) != sft_estimate  # twice the sequences per step

        screen.query_one("#stages", Input).value = "sft,dpo"
        screen.query_one("#stage_paths", Input).value = f"dpo={DPO_GOOD}"
        await pilot.press("ctrl+s")
        await pilot.pause()
    saved = C.resolve(tmp_path / "runs" / "pairs" / "config.toml", check=False)
    assert saved.method.name == "dpo" and saved.method.stages == ["sft", "dpo"]
    assert saved.data.stage_paths == [f"dpo={DPO_GOOD}"]


async def test_dpo_trains_from_the_setup_screen(tiny_model_dir, tmp_path, recorder):
    from edgetune.tui.messages import ErrorRaised, TrainingFinished, TrainingStepped

    app = make_app(hardware=FAKE_HARDWARE, shape_of=fake_shape_of, runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30), message_hook=recorder) as pilot:
        screen = app.screen
        screen.query_one("#method", Select).value = "dpo"
        for input_id, value in dict(model=str(tiny_model_dir), data=str(DPO_GOOD), max_steps="2", batch_size="2",
                                    run_name="dpo").items():
            screen.query_one(f"#{input_id}", Input).value = value
        await pilot.pause()
        await pilot.press("ctrl+t")
        await app.workers.wait_for_complete()
        await pilot.pause()
    done = recorder.of(TrainingFinished)[-1]
    assert (done.stopped, done.steps) == (False, 2), recorder.of(ErrorRaised)
    assert recorder.of(TrainingStepped)[-1].event.loss is not None


async def test_grpo_shows_reward_fields_and_saves_them(tiny_model_dir, tmp_path, recorder):
    app = make_app(hardware=FAKE_HARDWARE, shape_of=fake_shape_of, runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30), message_hook=recorder, notifications=True) as pilot:
        screen = app.screen
        rewards_row = screen.query_one("#rewards", Input).parent
        assert not rewards_row.display  # SFT: no rewards to set
        screen.query_one("#stages", Input).value = "sft,grpo"
        await pilot.pause()
        assert rewards_row.display
        for input_id, value in dict(model=str(tiny_model_dir), data=str(DPO_GOOD), run_name="rl",
                                    rewards="regex_format, repetition_penalty=0.5",
                                    reward_pattern=r"^Arr! \w+").items():
            screen.query_one(f"#{input_id}", Input).value = value
        assert screen.query_one("#loss_type", Select).parent.display
        assert screen.query_one("#loss_type", Select).value == "dapo"  # TRL's default
        screen.query_one("#loss_type", Select).value = "grpo"
        screen.query_one("#importance_sampling_level", Select).value = "sequence"  # GSPO
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
    saved = C.resolve(tmp_path / "runs" / "rl" / "config.toml", check=False)
    assert saved.method.rewards == ["regex_format", "repetition_penalty=0.5"]
    assert saved.method.reward_pattern == r"^Arr! \w+" and saved.method.stages == ["sft", "grpo"]
    assert (saved.method.loss_type, saved.method.importance_sampling_level) == ("grpo", "sequence")
