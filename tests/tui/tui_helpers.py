"""TUI test helpers (fixtures are in conftest.py): pinned hardware and model shape for deterministic screens, and a
recorder of the messages the app posts (App.run_test's message_hook), so tests wait on events instead of sleeping."""
from __future__ import annotations

import asyncio

from edgetune.hardware import Hardware
from edgetune.memory import ModelShape

RUN = "demo"
FAKE_HARDWARE = Hardware(device="cpu", cpu_cores=8, ram_gb=32.0, disk_free_gb=100.0)
# SmolLM2-135M's real numbers, so the estimate on screen matches what `default` would show
FAKE_SHAPE = ModelShape(n_params=134_515_008, hidden=576, layers=30, vocab=49152, intermediate=1536,
                        embed_params=49152 * 576, tied=True)


def fake_shape_of(ref: str) -> ModelShape:
    return FAKE_SHAPE


class Recorder:
    """Keeps every message the app processes; `wait_for(cls)` returns once one of that type has arrived."""

    def __init__(self):
        self.messages: list = []
        self._waiters: list[tuple[type, asyncio.Event]] = []

    def __call__(self, message) -> None:
        if any(m is message for m in self.messages[-50:]):
            return  # a bubbling message is seen once per node it passes; keep it once
        self.messages.append(message)
        for cls, event in self._waiters:
            if isinstance(message, cls):
                event.set()

    def of(self, cls) -> list:
        return [m for m in self.messages if isinstance(m, cls)]

    async def wait_for(self, cls, timeout: float = 120.0):
        if not self.of(cls):
            event = asyncio.Event()
            self._waiters.append((cls, event))
            await asyncio.wait_for(event.wait(), timeout)
        return self.of(cls)[-1]


async def export_from_screen(app, pilot, recorder, *types: str):
    """On the export screen: select exactly `types`, press ctrl+e, wait for the worker; the ExportFinished it posted
    (its result must be there: the last ErrorRaised is shown otherwise)."""
    from textual.widgets import SelectionList

    from edgetune.tui.messages import ErrorRaised, ExportFinished
    from edgetune.tui.screens.export import ExportScreen

    assert isinstance(app.screen, ExportScreen)
    choices = app.screen.query_one("#types", SelectionList)
    choices.deselect_all()
    for t in types:
        choices.select(t)
    await pilot.press("ctrl+e")
    await app.workers.wait_for_complete()
    await pilot.pause()
    exported = recorder.of(ExportFinished)[-1]
    assert exported.result is not None, recorder.of(ErrorRaised)
    return exported
