"""Train: live loss plot, learning rate, tokens/s, memory, ETA and a step log; Stop writes a checkpoint, Resume
continues from it. Training runs in a thread worker; the core's events arrive here as messages."""
from __future__ import annotations

import json
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, RichLog, Static
from textual.worker import Worker, WorkerState

from edgetune import runs
from edgetune.errors import Interrupted
from edgetune.events import Note, SampleGenerated, StageFinished, StageStarted
from edgetune.tui.messages import (CheckpointWritten, CoreEvent, ErrorRaised, PostingSink, RunOpened,
                                   TrainingFinished, TrainingStarted, TrainingStepped)
from edgetune.tui.widgets.loss_plot import LossPlot
from edgetune.tui.widgets.run_table import newest_checkpoint
from edgetune.tui.widgets.train_stats import TrainStats


class TrainScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop (checkpoint)"),
        Binding("r", "resume", "Resume"),
        Binding("e", "app.switch_mode('export')", "Export"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.cfg = None
        self.stopper = None
        self.worker: Worker | None = None
        self.last_step = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("No run yet: start one on Setup (F2) or open one in Runs (F6).", id="train-run")
        with Horizontal(id="train-body"):
            yield LossPlot(id="loss")
            with Vertical(id="train-side"):
                yield TrainStats(id="stats")
                yield Button("Stop", id="stop", variant="error", compact=True, disabled=True)
                yield Button("Resume", id="resume", variant="primary", compact=True, disabled=True)
        yield RichLog(id="step-log", max_lines=500, wrap=True)
        yield Footer()

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    # --- starting, stopping, resuming -------------------------------------------------------------------------
    def start(self, cfg, resume: bool = False) -> None:
        if self.running:
            self.notify("Training is already running.", severity="warning")
            return
        if not cfg.train.sample_every:  # the app shows the behaviour changing, not only the loss
            cfg.train.sample_every = 10
        self.cfg = cfg
        method = " → ".join(cfg.method.stages) or cfg.method.name
        self.query_one("#train-run", Static).update(f"Run {cfg.run_dir} — {cfg.model.ref}, {method}")
        if not resume:
            self.query_one(LossPlot).reset()
        self.query_one(TrainStats).show(None, "resuming" if resume else "starting")
        self.query_one("#stop", Button).disabled = False
        self.query_one("#resume", Button).disabled = True
        self.worker = self.run_training(cfg, resume)

    @work(thread=True, exclusive=True, group="train")
    def run_training(self, cfg, resume: bool) -> None:
        from edgetune.tui.services import heavy_imports

        heavy_imports()
        from edgetune.callbacks import StopOnSignal
        from edgetune.events import Fanout, MetricsFile
        from edgetune.train import train

        self.stopper = StopOnSignal()
        metrics = MetricsFile(Path(cfg.run_dir) / runs.METRICS, cfg.method.name)
        try:
            result = train(cfg, Fanout(PostingSink(self), metrics), resume=resume, stopper=self.stopper)
            self.post_message(TrainingFinished(result.run_dir, result.steps, False, result.final_loss))
        except Interrupted as e:
            self.post_message(CoreEvent(Note(e.message + (f" — {e.hint}" if e.hint else ""))))
            self.post_message(TrainingFinished(Path(cfg.run_dir), self.last_step or 0, True))
        except Exception as e:  # never a traceback: a titled message, and the screen returns to idle
            self.post_message(ErrorRaised.from_exception(e))
            self.post_message(TrainingFinished(Path(cfg.run_dir), self.last_step or 0, True, failed=True))

    def request_stop(self) -> None:
        if self.running and self.stopper is not None:
            self.stopper.request_stop()
            self.query_one(TrainStats).show(None, "stopping: writing a checkpoint")
            self.query_one("#stop", Button).disabled = True

    @on(Button.Pressed, "#stop")
    def action_stop(self) -> None:
        self.request_stop()

    @on(Button.Pressed, "#resume")
    def action_resume(self) -> None:
        if self.cfg is None or self.running:
            return
        resume = newest_checkpoint(Path(self.cfg.run_dir)) is not None
        self.start(self.cfg, resume=resume)

    # --- core events ------------------------------------------------------------------------------------------
    def on_training_started(self, message: TrainingStarted) -> None:
        e = message.event
        if e.start_step == 0:  # a fresh run or the next stage of a staged run: its own loss scale
            self.query_one(LossPlot).reset(e.method)
        self.log_line(f"training {e.method} with {e.engine}: steps {e.start_step + 1}..{e.max_steps}")

    def on_training_stepped(self, message: TrainingStepped) -> None:
        e = message.event
        self.last_step = e.step
        self.query_one(LossPlot).add(e.step, e.loss, e.extra.get("reward"))
        self.query_one(TrainStats).show(e, "stopping" if self.stopper and self.stopper.stop.is_set() else "training")
        loss = f"{e.loss:.4f}" if e.loss is not None else "-"
        self.log_line(f"step {e.step}/{e.max_steps} loss {loss}")

    def on_checkpoint_written(self, message: CheckpointWritten) -> None:
        e = message.event
        self.log_line(f"checkpoint ({e.reason}) at step {e.step}: {e.path}")

    def on_core_event(self, message: CoreEvent) -> None:
        e = message.event
        if isinstance(e, Note):
            self.log_line(("⚠ " if e.level == "warning" else "") + e.text)
        elif isinstance(e, SampleGenerated):
            self.log_line(f"sample @ step {e.step} ({e.prompt[:40]}): {e.text}")
        elif isinstance(e, StageStarted):
            self.log_line(f"▶ {e.stage} {e.detail}".rstrip())
        elif isinstance(e, StageFinished):
            self.log_line(f"✓ {e.stage} in {e.seconds:.1f} s {e.detail}".rstrip())

    def on_training_finished(self, message: TrainingFinished) -> None:
        status = "failed" if message.failed else "stopped (resumable)" if message.stopped else "finished"
        self.query_one(TrainStats).show(None, status)
        self.query_one("#stop", Button).disabled = True
        self.query_one("#resume", Button).disabled = not message.stopped
        if not message.stopped:
            loss = f", final loss {message.final_loss:.4f}" if message.final_loss is not None else ""
            self.notify(f"{message.steps} steps{loss}. Press e to export.", title="Training finished")
        elif not message.failed:
            self.notify(f"Checkpoint written at step {message.steps}. Press r to resume.", title="Training stopped")

    def log_line(self, text: str) -> None:
        self.query_one("#step-log", RichLog).write(text)

    # --- reopening a run --------------------------------------------------------------------------------------
    def on_run_opened(self, message: RunOpened) -> None:
        from edgetune.runs import load_run_config

        try:
            self.cfg = load_run_config(message.run_dir)
        except Exception as e:
            self.post_message(ErrorRaised.from_exception(e))
            return
        ckpt = newest_checkpoint(message.run_dir)
        done = (message.run_dir / runs.ADAPTER).is_dir()
        self.query_one("#train-run", Static).update(
            f"Run {message.run_dir} — " + (f"resumable from {ckpt.name}" if ckpt else "no checkpoint yet")
            + (", adapter saved" if done else ""))
        self.replay_metrics(message.run_dir / runs.METRICS)
        self.query_one("#resume", Button).disabled = self.running

    def replay_metrics(self, path: Path) -> None:
        """Redraw the loss curve of a reopened run from metrics.jsonl."""
        plot = self.query_one(LossPlot)
        plot.reset()
        if not path.is_file():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("event") == "TrainStep":
                plot.add(row["step"], row.get("loss"), row.get("reward"))
