"""Render core events in a terminal with rich: a live progress bar on a TTY, plain log lines otherwise (CI, pipes)."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from edgetune.errors import EdgetuneError
from edgetune.events import (CheckpointSaved, EvalDone, Event, Note, Progress as ProgressEvent, SampleGenerated,
                             StageFinished, StageStarted, TrainStarted, TrainStep)

err_console = Console(stderr=True)


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def method_parts(x: dict) -> list[str]:
    """GRPO: reward mean±std, each reward function's mean, KL, completion length. DPO/KTO: margin, accuracy,
    chosen/rejected rewards. Keys as TRL logs them."""
    parts = []
    if "reward" in x:
        parts.append(f"reward {x['reward']:.3f}" + (f"±{x['reward_std']:.2f}" if "reward_std" in x else ""))
        each = [(k[len("rewards/"):-len("/mean")], v) for k, v in x.items() if k.startswith("rewards/") and k.endswith("/mean")]
        if len(each) > 1:
            parts.append("(" + ", ".join(f"{name} {v:.2f}" for name, v in each) + ")")
    for key, label, fmt in (("kl", "kl", ".4f"), ("completions/mean_length", "len", ".0f"),
                            ("rewards/margins", "margin", ".3f"), ("rewards/accuracies", "acc", ".2f"),
                            ("rewards/chosen", "chosen", ".3f"), ("rewards/rejected", "rejected", ".3f")):
        if isinstance(x.get(key), (int, float)):
            parts.append(f"{label} {x[key]:{fmt}}")
    return parts


def step_line(e: TrainStep) -> str:
    parts = [f"step {e.step}/{e.max_steps}"]
    if e.loss is not None:
        parts.append(f"loss {e.loss:.4f}")
    if e.learning_rate is not None:
        parts.append(f"lr {e.learning_rate:.2e}")
    if e.grad_norm is not None:
        parts.append(f"grad {e.grad_norm:.2f}")
    parts += method_parts(e.extra)
    if e.tokens_per_s:
        parts.append(f"{e.tokens_per_s:.0f} tok/s")
    if e.memory_mb:
        parts.append(f"mem {e.memory_mb / 1024:.2f} GB")
    parts.append(f"eta {fmt_eta(e.eta_s)}")
    return "  ".join(parts)


class RichSink:
    """An event sink for the CLI."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal if live is None else live
        self.progress: Progress | None = None
        self.task = None
        self.stage_tasks: dict[str, int] = {}

    def _ensure_progress(self):
        if self.progress is None and self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console)
            self.progress.start()
        return self.progress

    def close(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.stage_tasks.clear()
            self.task = None

    def print(self, text: str):
        (self.progress.console if self.progress else self.console).print(text)

    def __call__(self, e: Event) -> None:
        if isinstance(e, StageStarted):
            self.print(f"[bold cyan]>> {e.stage}[/]" + (f" [dim]{e.detail}[/]" if e.detail else ""))
        elif isinstance(e, StageFinished):
            if e.stage in self.stage_tasks and self.progress:
                self.progress.remove_task(self.stage_tasks.pop(e.stage))
            if e.stage == "train":
                self.close()
            self.print(f"[green]ok {e.stage}[/] [dim]{e.seconds:.1f} s {e.detail}[/]")
        elif isinstance(e, Note):
            self.print(f"[yellow]! {escape(e.text)}[/]" if e.level == "warning" else f"   {escape(e.text)}")
        elif isinstance(e, TrainStarted):
            p = self._ensure_progress()
            if p is not None:
                self.task = p.add_task("train", total=e.max_steps, completed=e.start_step, info="")
            if e.start_step:
                self.print(f"   resuming at step {e.start_step}")
        elif isinstance(e, TrainStep):
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, completed=e.step, info=step_line(e).split("  ", 1)[-1])
            if not self.live or e.step % 10 == 0 or e.step == e.max_steps:
                self.print(step_line(e))
        elif isinstance(e, SampleGenerated):
            self.print(f"   [magenta]sample @ step {e.step}[/]: {escape(e.text[:200])}")
        elif isinstance(e, EvalDone):
            self.print("   eval " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in e.metrics.items() if isinstance(v, float)))
        elif isinstance(e, CheckpointSaved):
            self.print(f"   [dim]checkpoint ({e.reason}) step {e.step}: {escape(e.path)}[/]")
        elif isinstance(e, ProgressEvent):
            p = self._ensure_progress()
            if p is None:
                return
            if e.stage not in self.stage_tasks:
                self.stage_tasks[e.stage] = p.add_task(e.stage, total=e.total, info="")
            p.update(self.stage_tasks[e.stage], completed=e.done, total=e.total, info=e.detail)


def render_error(e: EdgetuneError, console: Console = err_console) -> None:
    body = escape(e.message) + (f"\n\n[bold]hint:[/] {escape(e.hint)}" if e.hint else "")
    console.print(Panel(body, title=f"[bold red]{escape(e.title)}[/]", title_align="left", border_style="red", expand=False),
                  markup=True, highlight=False)


def plain_error(e: EdgetuneError) -> None:
    """Fallback when rich markup might mangle a message (e.g. brackets in paths)."""
    sys.stderr.write(f"error: {e.title}\n{e.message}\n" + (f"hint: {e.hint}\n" if e.hint else ""))


def quiet_libraries() -> None:
    """Our events are the progress display: silence library progress bars and routine warnings in the CLI."""
    import logging
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    # bitsandbytes warns on every CPU import that an optional hub-downloaded kernel is missing; we never fetch it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # llama.cpp's own log (per-tensor quantize lines, loader dumps) goes through this logger; errors still show.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    try:
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    except ImportError:
        pass
