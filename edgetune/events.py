"""Typed progress events and the sink protocol.

The core emits events; the CLI renders them with rich, the TUI posts them as messages, tests collect them, and
`MetricsFile` appends them to metrics.jsonl. No consumer is special-cased in the core.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Event:
    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        return {"event": self.kind, "time": round(time.time(), 3), **asdict(self)}


@dataclass
class StageStarted(Event):
    stage: str
    detail: str = ""


@dataclass
class StageFinished(Event):
    stage: str
    seconds: float
    detail: str = ""


@dataclass
class Note(Event):
    """A line of information for the user (plan, memory estimate, warnings)."""

    text: str
    level: str = "info"  # info | warning


@dataclass
class TrainStarted(Event):
    max_steps: int
    start_step: int
    engine: str
    method: str


@dataclass
class TrainStep(Event):
    step: int
    max_steps: int
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    memory_mb: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    extra: dict = field(default_factory=dict)  # method-specific numbers (rewards, margins, ...)


@dataclass
class SampleGenerated(Event):
    """A greedy reply to a fixed training prompt during training, to watch the behaviour change."""

    step: int
    prompt: str
    text: str


@dataclass
class EvalDone(Event):
    step: int
    metrics: dict


@dataclass
class CheckpointSaved(Event):
    step: int
    path: str
    reason: str = "interval"  # interval | interrupt | final


@dataclass
class Progress(Event):
    """Generic progress for slow non-training work (loading, converting, merging)."""

    stage: str
    done: float
    total: float
    detail: str = ""


class Sink(Protocol):
    def __call__(self, event: Event) -> None: ...


def null_sink(event: Event) -> None:
    """Default sink: drop everything."""


class Fanout:
    """Send each event to several sinks (e.g. the CLI display and metrics.jsonl)."""

    def __init__(self, *sinks: Sink):
        self.sinks = [s for s in sinks if s is not None]

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)


class Collect:
    """Keep every event in a list (tests, benchmarks)."""

    def __init__(self):
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, cls: type) -> list:
        return [e for e in self.events if isinstance(e, cls)]


class MetricsFile:
    """Append events to metrics.jsonl, one JSON object per line; step lines carry top-level `step` and `loss`."""

    def __init__(self, path: Path, stage: str = ""):
        self.path = Path(path)
        self.stage = stage
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress):
            return  # too chatty for a metrics log
        row = event.to_dict()
        if self.stage:
            row.setdefault("run_stage", self.stage)
        if isinstance(event, TrainStep):
            row.update(row.pop("extra") or {})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
