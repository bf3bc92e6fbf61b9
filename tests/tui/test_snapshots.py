"""SVG snapshots of every screen (pytest-textual-snapshot). Deterministic: fixed size, pinned hardware and model
shape, a run directory with fixed contents at a relative path, no cursor blink, no clock.

Update after an intended change: pytest tests/tui/test_snapshots.py --snapshot-update
"""
from __future__ import annotations

from textual.widgets import Input

from tui_helpers import FAKE_HARDWARE, fake_shape_of
from edgetune.tui.app import make_app


def app(**kw):
    return make_app(hardware=FAKE_HARDWARE, shape_of=fake_shape_of, runs_root="runs", **kw)


async def settle(pilot) -> None:
    """Wait for the workers, then stop every cursor blinking so the frame is the same every time."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


def test_setup_screen(snap_compare, runs_here):
    assert snap_compare(app(), terminal_size=(100, 30), run_before=settle)


def test_setup_screen_fits_80x24(snap_compare, runs_here):
    assert snap_compare(app(), terminal_size=(80, 24), run_before=settle)


def test_train_screen_reopened_run(snap_compare, runs_here):
    async def open_train(pilot):
        await pilot.app.open_stage(runs_here.relative_to(runs_here.parents[1]), "train")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=(100, 30), run_before=open_train)


def test_export_screen_with_report(snap_compare, runs_here):
    async def open_export(pilot):
        await pilot.app.open_stage(runs_here.relative_to(runs_here.parents[1]), "export")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=(100, 30), run_before=open_export)


class CannedBackend:
    """A chat backend with one fixed reply (simon/llm's habit): the screen runs its real ask/stream path."""

    def __init__(self, name: str, reply: str):
        self.name, self.reply, self.finish_reason = name, reply, "stop"

    def stream(self, messages, max_tokens, temperature):
        yield from self.reply.split(" ")[:1] + [" " + w for w in self.reply.split(" ")[1:]]


def test_chat_screen(snap_compare, runs_here):
    async def canned_chat(pilot):
        from edgetune.chat import ChatSession
        from edgetune.tui.messages import ChatOpened

        await pilot.app.open_stage(runs_here.relative_to(runs_here.parents[1]), "chat")
        await settle(pilot)
        screen = pilot.app.screen
        replies = {"base": "The capital of France is Paris.", "tuned": "Arr! Paris it be, matey."}
        for side, label in (("tuned", "demo.Q8_0.gguf (llamacpp)"), ("base", "base.gguf (llamacpp)")):
            screen.sessions[side] = ChatSession(CannedBackend("llamacpp", replies[side]), label)
            screen.post_message(ChatOpened(side, label))
        await pilot.pause()
        screen.query_one("#prompt", Input).value = "What is the capital of France?"
        await pilot.press("enter")  # the screen's own path: both panes ask, stream and reply
        await settle(pilot)

    assert snap_compare(app(), terminal_size=(100, 30), run_before=canned_chat)


def test_runs_screen(snap_compare, runs_here):
    async def open_runs(pilot):
        await pilot.app.switch_mode("runs")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=(100, 30), run_before=open_runs)


def test_help_screen(snap_compare, runs_here):
    assert snap_compare(app(), press=["f1"], terminal_size=(100, 30), run_before=settle)
