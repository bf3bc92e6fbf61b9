"""The numbers of the latest training step: step, loss, learning rate, tokens/s, memory, ETA."""
from __future__ import annotations

from rich.table import Table
from textual.widgets import Static


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


class TrainStats(Static):
    def on_mount(self) -> None:
        self.show(None, "idle")

    def show(self, step_event, status: str) -> None:
        e = step_event
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("status", status)
        table.add_row("step", f"{e.step} / {e.max_steps}" if e else "-")
        table.add_row("loss", _num(e.loss if e else None, ".4f"))
        table.add_row("lr", _num(e.learning_rate if e else None, ".2e"))
        table.add_row("tokens/s", _num(e.tokens_per_s if e else None, ".0f"))
        table.add_row("memory", f"{e.memory_mb:.0f} MB" if e and e.memory_mb else "-")
        table.add_row("ETA", _eta(e.eta_s if e else None))
        self.update(table)
