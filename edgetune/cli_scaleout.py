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


def run_training(cfg, resume: bool):
    """`edgetune train` on one process, or on N (`train.nproc`): the launcher starts the workers and exits with their
    code; in a worker, rank 0 reports and writes metrics.jsonl, the other ranks stay quiet (None)."""
    from edgetune import runs
    from edgetune.console import RichSink
    from edgetune.distributed import inside_launch, is_main
    from edgetune.events import Fanout, MetricsFile, null_sink
    from edgetune.train import train

    if cfg.train.nproc > 1 and not inside_launch():
        raise typer.Exit(launch_workers(cfg, resume))
    if not is_main():
        train(cfg, null_sink, resume=resume)
        return None
    sink = RichSink()
    try:
        return train(cfg, Fanout(sink, MetricsFile(Path(cfg.run_dir) / runs.METRICS, cfg.method.name)), resume=resume)
    finally:
        sink.close()

def launch_workers(cfg, resume: bool) -> int:
    """`edgetune train --nproc N`: refuse up front what cannot run, write the config the workers read, start them."""
    from edgetune import distributed, hardware, runs
    from edgetune.console import RichSink
    from edgetune.train import check_resume

    run_dir = Path(cfg.run_dir)
    distributed.check(cfg, hardware.detect(run_dir))
    check_resume(run_dir, resume)
    from edgetune import models

    sink = RichSink()  # a GGUF or the default model is converted once, here, not by N workers racing for the cache
    try:
        models.resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code, sink)
    finally:
        sink.close()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / runs.CONFIG)  # the run's config plus this command's flags: what every worker reads
    typer.echo(f"training on {cfg.train.nproc} processes ({cfg.train.distributed}); rank 0 reports")
    return distributed.launch(run_dir, cfg.train.nproc, resume)  # rank 0 printed the result


def launch_config(
    source: Path = typer.Argument(..., help="A run directory or a config TOML file."),
    out: Path = typer.Option(..., "--out", help="Folder to write config.toml, accelerate_{ddp,fsdp}.yaml and run.sh into."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Processes when the box has no GPUs to count (default: the config's train.nproc, at least 2)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Retune precision, 4-bit and batch for the box's GPUs with this profile (e.g. gpu-24gb)."),
):
    """Files to run the same training on a rented multi-GPU box: the resolved config, accelerate configs (DDP and
    FSDP) and a run.sh calling `accelerate launch` on edgetune's training entry point."""
    from edgetune.console import RichSink
    from edgetune.launch_config import write_launch_config

    sink = RichSink()
    try:
        script = write_launch_config(source, out, nproc, profile, sink)
    finally:
        sink.close()
    typer.echo(f"wrote {out}/config.toml, accelerate_ddp.yaml, accelerate_fsdp.yaml, {script.name}")
    typer.echo(f"on the box: cd {out.name} && ./run.sh   (MODE=fsdp ./run.sh to shard the model)")


handoff_app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                          help="Hand a run over to another trainer for scale (Verl for GRPO).")


@handoff_app.command(name="verl")
def handoff_verl(
    source: Path = typer.Argument(..., help="A GRPO run directory (or sft,grpo stages) or a config TOML file."),
    out: Path = typer.Option(..., "--out", help="Folder for train.parquet, val.parquet, reward_fn.py and run_verl.sh."),
):
    """GRPO on Verl (Ray, vLLM rollouts): the prompts as parquet in Verl's schema, reward_fn.py applying the run's
    edgetune rewards with their weights, and run_verl.sh with the main_ppo overrides for GRPO with LoRA."""
    from edgetune.console import RichSink
    from edgetune.handoff_verl import write_verl_handoff

    sink = RichSink()
    try:
        summary = write_verl_handoff(source, out, sink)
    finally:
        sink.close()
    typer.echo(f"wrote {out}/train.parquet ({summary['rows']} prompts), val.parquet, reward_fn.py, run_verl.sh")
    typer.echo(f"on the GPU box: {out}/run_verl.sh   (policy: {summary['model']})")
