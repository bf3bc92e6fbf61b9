"""The CLI's scale-out commands and options: runs trained elsewhere (--model/--adapter on export, eval and chat),
`launch-config` (accelerate files for a rented multi-GPU box) and `handoff verl` (GRPO at scale). Registered on the
app by edgetune.cli; this module never imports it back."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgetune.errors import EdgetuneError

IMPORT_MODEL = "A run trained elsewhere: a merged HF folder, or the base model (with --adapter); made into a run directory."
IMPORT_ADAPTER = "With --model BASE: a LoRA adapter folder saved by PEFT (any tool), merged into the 16-bit base."
IMPORT_RUN_DIR = "With --model: the run directory to create or reuse (default runs/<model>-imported)."


def import_target(target, model: str | None, adapter: Path | None, run_dir: Path | None) -> str:
    """The positional run/model, or the run directory made for --model [--adapter] (edgetune.imported_run)."""
    if model is None:
        if adapter is not None or run_dir is not None:
            raise EdgetuneError("--adapter and --run-dir go with --model", hint="add --model BASE_OR_MERGED_DIR", title="Missing option")
        if target is None:
            raise EdgetuneError("no model given", hint="pass a run directory, or --model DIR [--adapter DIR]", title="Missing argument")
        return str(target)
    if target is not None:
        raise EdgetuneError(f"both {target} and --model given", hint="pass one of them", title="Conflicting arguments")
    from edgetune.console import RichSink
    from edgetune.imported_run import import_run

    sink = RichSink()
    try:
        return str(import_run(model, adapter, run_dir, sink))
    finally:
        sink.close()
