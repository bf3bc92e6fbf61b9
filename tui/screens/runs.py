"""Runs: every run directory under runs/ and how far it got; reopen one and continue from any stage."""
from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from edgetune.tui.widgets.run_table import RunTable, next_stage, run_status


class RunsScreen(Screen):
    BINDINGS = [
        Binding("t", "open('train')", "Train/resume"),
        Binding("e", "open('export')", "Export"),
        Binding("c", "open('chat')", "Chat"),
        Binding("g", "refresh", "Refresh"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="runs-root")
        yield RunTable(id="runs")
        with Horizontal(id="runs-buttons"):
            yield Button("Train / resume", id="open-train", compact=True)
            yield Button("Export", id="open-export", compact=True)
            yield Button("Chat", id="open-chat", compact=True)
        yield Footer()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        root = self.app.runs_root
        found = self.query_one(RunTable).show(root)
        self.query_one("#runs-root", Static).update(
            f"{len(found)} run(s) in {root}/ — Enter opens the next stage" if found
            else f"No runs in {root}/ yet: start one on Setup (F2).")

    def selected(self) -> Path | None:
        table = self.query_one(RunTable)
        if table.row_count == 0:
            return None
        return Path(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    async def action_open(self, stage: str) -> None:
        run_dir = self.selected()
        if run_dir is not None:
            await self.app.open_stage(run_dir, stage)

    @on(DataTable.RowSelected)
    async def row_selected(self, event: DataTable.RowSelected) -> None:
        run_dir = Path(event.row_key.value)
        await self.app.open_stage(run_dir, next_stage(run_status(run_dir)))

    @on(Button.Pressed)
    async def button(self, event: Button.Pressed) -> None:
        await self.action_open(event.button.id.removeprefix("open-"))
