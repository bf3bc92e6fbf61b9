"""Multi-stage runs (`--stages sft,dpo,grpo`): each stage is a sub-run in RUN/stages/<n>-<method>/ with its own
config.toml, checkpoints, metrics.jsonl and adapter, starting from the previous stage's adapter. A config's
`[stage.METHOD.SECTION]` tables set options for one stage only (e.g. fewer steps and a lower learning rate for
GRPO). The last stage's adapter becomes RUN/adapter, so merge and export work on a staged run as on any other.
Resuming skips finished stages and resumes the one that was interrupted.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgetune import runs
from edgetune.config import RunConfig, for_stage
from edgetune.distributed import is_main
from edgetune.errors import ConfigError, Interrupted
from edgetune.events import Fanout, MetricsFile, Note, null_sink


def stage_dirs(cfg: RunConfig) -> list[tuple[str, Path]]:
    root = Path(cfg.run_dir) / "stages"
    return [(m, root / f"{i}-{m}") for i, m in enumerate(cfg.method.stages, 1)]


def stage_config(cfg: RunConfig, method: str, run_dir: Path) -> RunConfig:
    sub = for_stage(cfg, method)  # with its own data.stage_paths entry as data.path
    sub.run_dir, sub.name = str(run_dir), f"{cfg.name}-{run_dir.name}"
    return sub


def train_stages(cfg: RunConfig, train_one, sink=null_sink, resume: bool = False, stopper=None):
    """Run every stage with `train_one` (edgetune.train.train_one, passed in so the two modules stay one-way)."""
    bad = [p for p in cfg.data.stage_paths if "=" not in p]
    if bad:
        raise ConfigError([f"`data.stage_paths` entry {p!r} is not METHOD=PATH" for p in bad])
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main():
        cfg.save(run_dir / runs.CONFIG)
    previous, result = None, None
    for method, sdir in stage_dirs(cfg):
        sub = stage_config(cfg, method, sdir)
        done = (sdir / runs.ADAPTER / "adapter_config.json").is_file()
        if done:
            sink(Note(f"stage {sdir.name}: already finished, continuing from its adapter"))
            previous = sdir / runs.ADAPTER
            continue
        again = resume and runs.last_checkpoint(sdir) is not None
        sink(Note(f"stage {sdir.name}: {method} on {sub.data.path}" + (f", from {previous}" if previous else "")))
        stage_sink = Fanout(sink, MetricsFile(sdir / runs.METRICS, method)) if is_main() else sink
        try:
            result = train_one(sub, stage_sink, resume=again, stopper=stopper, init_adapter=previous)
        except Interrupted as e:  # point at the staged run, which knows where to pick up
            raise Interrupted(e.message, hint=f"continue with: edgetune train --resume --run-dir {run_dir}") from None
        previous = result.adapter_dir
    final = run_dir / runs.ADAPTER
    if is_main():
        tmp = runs.temp_dir_beside(final)
        shutil.copytree(previous, tmp, dirs_exist_ok=True)
        runs.replace_dir(tmp, final)
        if (previous.parent / runs.BASE).is_file():  # the weights every stage trained on, for merge and export
            runs.atomic_write_text(run_dir / runs.BASE, (previous.parent / runs.BASE).read_text(encoding="utf-8"))
    if result is not None:
        result.run_dir, result.adapter_dir = run_dir, final
    return result
