"""The run directories under runs/ and how far each got (config, checkpoint, adapter, merged, GGUF)."""
from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from edgetune import runs


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The run's last checkpoint, or the newest one of a staged run's stages (RUN/stages/<n>-<method>/)."""
    found = [runs.last_checkpoint(run_dir)] + [runs.last_checkpoint(d) for d in sorted((run_dir / "stages").glob("*-*"))]
    found = [c for c in found if c is not None]
    return max(found, key=lambda c: c.stat().st_mtime) if found else None


def run_status(run_dir: Path) -> dict:
    ckpt = newest_checkpoint(run_dir)
    ggufs = sorted(p.name for p in (run_dir / runs.GGUF).glob("*.gguf"))
    return {"checkpoint": ckpt.name if ckpt else "", "adapter": (run_dir / runs.ADAPTER).is_dir(),
            "merged": (run_dir / runs.MERGED / "config.json").is_file(), "gguf": ggufs}


def next_stage(status: dict) -> str:
    """Where to continue: train (or resume), then export, then chat."""
    if status["gguf"]:
        return "chat"
    if status["adapter"]:
        return "export"
    return "train"


def list_runs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if (p / runs.CONFIG).is_file()), key=lambda p: p.name)


class RunTable(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("run", "checkpoint", "adapter", "merged", "GGUF", "next")

    def show(self, root: Path) -> list[Path]:
        self.clear()
        found = list_runs(root)
        for p in found:
            s = run_status(p)
            self.add_row(p.name, s["checkpoint"] or "-", "yes" if s["adapter"] else "-",
                         "yes" if s["merged"] else "-", ", ".join(n.split(".")[-2] for n in s["gguf"]) or "-",
                         next_stage(s), key=str(p))
        return found
