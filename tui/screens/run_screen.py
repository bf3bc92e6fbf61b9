"""A screen that follows the app's current run: it (re)opens it when shown and when a RunOpened arrives."""
from __future__ import annotations

from pathlib import Path

from textual.screen import Screen

from edgetune.tui.messages import RunOpened


class RunScreen(Screen):
    def __init__(self) -> None:
        super().__init__()
        self.run_dir: Path | None = None

    def on_screen_resume(self) -> None:
        if self.app.run_dir and self.app.run_dir != self.run_dir:
            self.open_run(self.app.run_dir)

    def on_run_opened(self, message: RunOpened) -> None:
        self.open_run(message.run_dir)

    def open_run(self, run_dir: Path) -> None:
        raise NotImplementedError
