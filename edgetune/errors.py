"""One titled error tree. The CLI (and the TUI) render these without a traceback and exit non-zero.

Every error says what was wrong, where (file:line or config field) and what to set instead.
"""
from __future__ import annotations


class EdgetuneError(Exception):
    """Base of every user-facing error: `title` (short), `message` (what and where), `hint` (what to do)."""

    title = "edgetune error"

    def __init__(self, message: str, hint: str = "", title: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if title:
            self.title = title

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(EdgetuneError):
    title = "Invalid configuration"

    def __init__(self, problems: list[str], hint: str = "", source: str = ""):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        head = f"{len(self.problems)} problem(s){where}:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]), hint)


class DataError(EdgetuneError):
    title = "Unusable dataset"

    def __init__(self, message: str, hint: str = "", problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(message, hint)


class ModelError(EdgetuneError):
    title = "Cannot load model"


class HardwareError(EdgetuneError):
    title = "Hardware not suitable"


class TrainError(EdgetuneError):
    title = "Training failed"


class RunDirError(EdgetuneError):
    title = "Run directory problem"


class ExportError(EdgetuneError):
    title = "Export failed"


class Interrupted(EdgetuneError):
    """Raised after a clean stop on Ctrl-C (a checkpoint was written). Exit code 130."""

    title = "Interrupted"
