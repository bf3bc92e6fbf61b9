"""The run directory's contract: where each stage's output lives, the run's config and report, and the texts
training leaves for later stages (held-out rows for verification, calibration rows for the importance matrix)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from edgetune.atomic import atomic_write_text, replace_dir, temp_dir_beside  # noqa: F401 - the run dir's writers
from edgetune.errors import RunDirError

CONFIG = "config.toml"
DATA_REPORT = "data_report.json"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MERGED = "merged"
GGUF = "gguf"
METRICS = "metrics.jsonl"
REPORT = "report.json"
HELDOUT = "heldout.jsonl"  # rendered held-out conversations, as training split them off
CALIBRATION = "calibration.jsonl"  # rendered training conversations for the importance matrix
BASE = "base.json"  # the exact base weights trained on (edgetune.base_identity)
HELDOUT_TEXT = "heldout_text.jsonl"  # cpt: held-out blocks of domain text, for eval's perplexity
IMPORTED = "imported.json"  # a run trained elsewhere: where its model / adapter came from (edgetune.imported_run)


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


def load_run_config(run_dir: Path):
    """The run's resolved config (config.toml), with run_dir set to where it was found."""
    from edgetune.config import from_dict, read_toml

    cfg = from_dict(read_toml(Path(run_dir) / CONFIG), str(Path(run_dir) / CONFIG))
    cfg.run_dir = str(run_dir)
    return cfg


def update_report(run_dir: Path, key: str, value) -> None:
    """report.json accumulates one section per stage (merge, export, eval)."""
    path = Path(run_dir) / REPORT
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[key] = value
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def write_texts(run_dir: Path, name: str, texts: list[str]) -> None:
    """One {"text": ...} per line (HELDOUT, CALIBRATION)."""
    atomic_write_text(Path(run_dir) / name, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))


def read_texts(run_dir: Path, name: str) -> list[str] | None:
    """The texts training wrote, or None for a run from before edgetune wrote them."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

