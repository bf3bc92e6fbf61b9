"""The run directory: one place every stage reads from and writes to, and atomic file writes."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from edgetune.errors import RunDirError

CONFIG = "config.toml"
DATA_REPORT = "data_report.json"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MERGED = "merged"
GGUF = "gguf"
METRICS = "metrics.jsonl"
REPORT = "report.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written temp directory into place, replacing an older one."""
    final_dir = Path(final_dir)
    old = final_dir.with_name(f".{final_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def temp_dir_beside(final_dir: Path) -> Path:
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.", suffix=".tmp"))


def default_run_dir(name: str) -> Path:
    return Path("runs") / name


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder (one that has trainer_state.json), or None."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def require_run_dir(run_dir: Path, *need: str) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir}: not an edgetune run directory (no {CONFIG})",
                          hint="pass the --run-dir of a finished `edgetune train`")
    for item in need:
        if not (run_dir / item).exists():
            raise RunDirError(f"{run_dir}: missing {item}/", hint=f"run the stage that writes {item} first (e.g. `edgetune train --resume --run-dir {run_dir}`)")
    return run_dir
