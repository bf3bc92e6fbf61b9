"""The edgetune Textual app: one screen per stage (setup, train, export, chat, runs), switched as modes so each
keeps its state, over the same headless core the CLI drives.

`make_app()` is the one way to build it (the CLI, the tests and the snapshot tests all call it), as in posting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from textual.app import App
from textual.binding import Binding

from edgetune.tui.messages import ErrorRaised, RunOpened, TrainingFinished
from edgetune.tui.screens.chat import ChatScreen
from edgetune.tui.screens.export import ExportScreen
from edgetune.tui.screens.help import HelpScreen
from edgetune.tui.screens.runs import RunsScreen
from edgetune.tui.screens.setup import SetupScreen
from edgetune.tui.screens.train import TrainScreen


class EdgetuneApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "edgetune"
    SUB_TITLE = "fine-tune, export, chat offline"
    MODES = {"setup": SetupScreen, "train": TrainScreen, "export": ExportScreen, "chat": ChatScreen,
             "runs": RunsScreen}
    BINDINGS = [
        Binding("f2", "switch_mode('setup')", "Setup"),
        Binding("f3", "switch_mode('train')", "Train"),
        Binding("f4", "switch_mode('export')", "Export"),
        Binding("f5", "switch_mode('chat')", "Chat"),
        Binding("f6", "switch_mode('runs')", "Runs"),
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, run_dir: Path | None = None, hardware=None, runs_root: Path | str = "runs",
                 model_ref: str = "default", data_path: str = "", shape_of: Callable | None = None,
                 chat_max_tokens: int = 128, start_mode: str | None = None):
        super().__init__()
        self.hardware = hardware  # None = detect in a worker on the setup screen
        self.runs_root = Path(runs_root)
        self.model_ref, self.data_path = model_ref, data_path
        self.shape_of = shape_of  # injectable model inspector (tests pin the memory estimate)
        self.chat_max_tokens = chat_max_tokens
        self.run_dir: Path | None = Path(run_dir) if run_dir else None
        self.start_mode = start_mode
        self.quitting = False

    async def on_mount(self) -> None:
        if self.run_dir is not None and self.start_mode is None:
            await self.open_run(self.run_dir)
        else:
            await self.switch_mode(self.start_mode or "setup")

    async def open_run(self, run_dir: Path) -> None:
        """`edgetune tui --run-dir X`: open the run at its next stage (train/resume, export or chat)."""
        from edgetune import runs
        from edgetune.tui.widgets.run_table import next_stage, run_status

        if not (run_dir / runs.CONFIG).is_file():
            await self.switch_mode("runs")
            self.post_message(ErrorRaised("Run directory problem", f"{run_dir}: not an edgetune run directory "
                                          f"(no {runs.CONFIG})", "pick a run below, or start one on Setup (F2)"))
            return
        await self.open_stage(run_dir, next_stage(run_status(run_dir)))

    # --- navigation -------------------------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def begin_training(self, cfg, resume: bool = False) -> None:
        """Setup's Start and Runs' Resume: switch to the train screen and start the worker there."""
        self.run_dir = Path(cfg.run_dir)
        await self.switch_mode("train")
        self.screen.start(cfg, resume)

    async def open_stage(self, run_dir: Path, stage: str) -> None:
        self.run_dir = Path(run_dir)
        await self.switch_mode(stage)
        self.screen.post_message(RunOpened(self.run_dir, stage))

    # --- events bubbling up from the screens --------------------------------------------------------------------
    def on_error_raised(self, message: ErrorRaised) -> None:
        """Core errors appear as titled notifications, never tracebacks."""
        text = message.message + (f"\n\nhint: {message.hint}" if message.hint else "")
        self.notify(text, title=message.title, severity="error", timeout=12, markup=False)

    def on_training_finished(self, message: TrainingFinished) -> None:
        self.run_dir = message.run_dir
        if self.quitting:
            self.exit(0)

    # --- quitting mid-run leaves a resumable checkpoint ------------------------------------------------------
    async def action_quit(self) -> None:
        train = self._mode_screen("train")
        if train is not None and train.running and not self.quitting:
            self.quitting = True
            train.request_stop()
            self.notify("Writing a checkpoint, then quitting. Ctrl+Q again closes the window now; the process "
                        "still ends only after the checkpoint.", title="Stopping training")
            return
        export = self._mode_screen("export")
        if export is not None and export.running and not self.quitting:
            self.quitting = True
            self.notify("An export is running and cannot be interrupted safely; Ctrl+Q again closes the window, "
                        "the process ends when the export does.", title="Export running", severity="warning")
            return
        self.exit(0)

    def _mode_screen(self, mode: str):
        """The base screen of a mode, if it was ever opened (modes keep their screens alive)."""
        stack = self._screen_stacks.get(mode) or []
        return stack[0] if stack else None


def make_app(run_dir: Path | str | None = None, hardware=None, runs_root: Path | str = "runs", model_ref: str = "default",
             data_path: str = "", shape_of: Callable | None = None, chat_max_tokens: int = 128,
             start_mode: str | None = None) -> EdgetuneApp:
    """Build the app. `hardware` (an edgetune.hardware.Hardware) and `shape_of` (ref -> ModelShape) pin what
    would otherwise be detected, so snapshot tests are deterministic."""
    return EdgetuneApp(Path(run_dir) if run_dir else None, hardware, runs_root, model_ref, data_path, shape_of,
                       chat_max_tokens, start_mode)
