"""Messages the app posts: the core's events, renamed as past-tense UI events (harlequin's `QueriesExecuted`).

Workers run the core in threads; `post_message` is thread-safe, so a core sink can post these directly.
Each carries the core object unchanged (attributes down, messages up: screens read, never mutate, them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.message import Message

from edgetune import events as ev


class CoreEvent(Message):
    """Any core event not given its own message (notes, stage starts, progress)."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


class TrainingStarted(Message):
    def __init__(self, event: ev.TrainStarted) -> None:
        super().__init__()
        self.event = event


class TrainingStepped(Message):
    def __init__(self, event: ev.TrainStep) -> None:
        super().__init__()
        self.event = event


class CheckpointWritten(Message):
    def __init__(self, event: ev.CheckpointSaved) -> None:
        super().__init__()
        self.event = event


class TrainingFinished(Message):
    """Training ended: `stopped` is True after Stop/quit (a resumable checkpoint exists), False when complete."""

    def __init__(self, run_dir: Path, steps: int, stopped: bool, final_loss: float | None = None,
                 failed: bool = False) -> None:
        super().__init__()
        self.run_dir, self.steps, self.stopped, self.final_loss = Path(run_dir), steps, stopped, final_loss
        self.failed = failed


class ValidationFinished(Message):
    """Setup's dataset check: the report and one rendered example (text + assistant spans)."""

    def __init__(self, path: str, report: Any, example: tuple[str, list[tuple[int, int]]] | None,
                 error: "ErrorRaised | None" = None) -> None:
        super().__init__()
        self.path, self.report, self.example, self.error = path, report, example, error


class HardwareDetected(Message):
    def __init__(self, hardware: Any) -> None:
        super().__init__()
        self.hardware = hardware


class ModelInspected(Message):
    """The model's shape (for the memory estimate) is known, or `shape` is None with a reason; `support` says
    whether it can be exported to GGUF / ONNX (edgetune.preflight.ExportSupport, None when unknown)."""

    def __init__(self, ref: str, shape: Any, reason: str = "", support: Any = None) -> None:
        super().__init__()
        self.ref, self.shape, self.reason, self.support = ref, shape, reason, support


class ExportProgressed(Message):
    def __init__(self, stage: str, done: float, total: float, detail: str = "") -> None:
        super().__init__()
        self.stage, self.done, self.total, self.detail = stage, done, total, detail


class ExportFinished(Message):
    def __init__(self, run_dir: Path, result: Any) -> None:
        super().__init__()
        self.run_dir, self.result = Path(run_dir), result


class ChatOpened(Message):
    def __init__(self, side: str, label: str) -> None:
        super().__init__()
        self.side, self.label = side, label


class ChatReplied(Message):
    """A reply is complete on one side (`base` or `tuned`); `finish` is stop | length."""

    def __init__(self, side: str, text: str, finish: str) -> None:
        super().__init__()
        self.side, self.text, self.finish = side, text, finish


class ChatStreamed(Message):
    def __init__(self, side: str, piece: str) -> None:
        super().__init__()
        self.side, self.piece = side, piece


class RunOpened(Message):
    """The user picked a run directory (Runs screen) or a run was created (Setup)."""

    def __init__(self, run_dir: Path, stage: str = "") -> None:
        super().__init__()
        self.run_dir, self.stage = Path(run_dir), stage


class ErrorRaised(Message):
    """A core error (EdgetuneError) or an unexpected one, already reduced to title/message/hint."""

    def __init__(self, title: str, message: str, hint: str = "") -> None:
        super().__init__()
        self.title, self.message, self.hint = title, message, hint

    @classmethod
    def from_exception(cls, e: BaseException) -> "ErrorRaised":
        from edgetune.errors import EdgetuneError

        if isinstance(e, EdgetuneError):
            return cls(e.title, e.message, e.hint)
        return cls(f"Unexpected error ({type(e).__name__})", str(e) or repr(e),
                   "this is a bug in edgetune or a library; the run directory keeps what was written so far")


def event_to_message(event: ev.Event) -> Message:
    """Map a core event to the message the screens handle."""
    if isinstance(event, ev.TrainStep):
        return TrainingStepped(event)
    if isinstance(event, ev.TrainStarted):
        return TrainingStarted(event)
    if isinstance(event, ev.CheckpointSaved):
        return CheckpointWritten(event)
    if isinstance(event, ev.Progress):
        return ExportProgressed(event.stage, event.done, event.total, event.detail)
    return CoreEvent(event)


class PostingSink:
    """A core sink that posts each event as a message to `target` (a screen), from any thread."""

    def __init__(self, target) -> None:
        self.target = target

    def __call__(self, event: ev.Event) -> None:
        self.target.post_message(event_to_message(event))
