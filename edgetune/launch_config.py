"""`edgetune launch-config RUN_OR_CONFIG --out DIR`: what a person needs to run the same training on a rented
multi-GPU box with plain tools. DIR gets the resolved config (data files copied beside it, paths made relative),
accelerate config files for data parallel (DDP) and sharded (FSDP) training, and run.sh, which calls
`accelerate launch` on edgetune's training entry point (`python -m edgetune.cli train`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgetune import runs
from edgetune.config import RunConfig, apply_overrides, load_profile
from edgetune.errors import ConfigError
from edgetune.events import Note, null_sink

DDP_YAML = """\
# accelerate config: data parallel, one process per GPU, each holding the whole model (LoRA or QLoRA).
# Written by `edgetune launch-config`; used by run.sh (MODE=ddp). The precision is edgetune's (train.precision).
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
machine_rank: 0
num_processes: {nproc}
gpu_ids: all
mixed_precision: 'no'
rdzv_backend: static
same_network: true
use_cpu: false
"""

FSDP_YAML = """\
# accelerate config: FSDP2 shards the 16-bit model, gradients and optimizer state across GPUs, for a model one GPU
# cannot hold in 16-bit LoRA. Written by `edgetune launch-config`; used by run.sh (MODE=fsdp). Needs
# model.load_in_4bit = false in config.toml (edgetune refuses 4-bit with FSDP before loading anything).
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
machine_rank: 0
num_processes: {nproc}
gpu_ids: all
mixed_precision: 'no'
rdzv_backend: static
same_network: true
use_cpu: false
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: SHARDED_STATE_DICT
  fsdp_cpu_ram_efficient_loading: false
  fsdp_offload_params: false
"""

RUN_SH = """\
#!/usr/bin/env bash
# Train `{name}` on this machine: accelerate launch runs edgetune's training entry point
# (python -m edgetune.cli train) on NPROC processes. Needs edgetune {version} and accelerate installed here.
#   ./run.sh                  data parallel (DDP): one process per GPU, NPROC = the GPUs nvidia-smi lists
#   MODE=fsdp ./run.sh        FSDP: the 16-bit model sharded across the GPUs
#   NPROC=4 ./run.sh          another process count (without GPUs: NPROC CPU processes on gloo; default {nproc})
# train.batch_size in config.toml is per device: effective batch = batch_size x grad_accum x NPROC.
# Ctrl-C writes a checkpoint (torchrun then reports the signal with a traceback); running this again resumes from it.
# Bring the result home with:
#   edgetune export --model <base> --adapter {run_dir}/adapter
set -euo pipefail
cd "$(dirname "$0")"
MODE="${{MODE:-ddp}}"
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
if [ "${{GPUS:-0}}" -gt 0 ]; then DEFAULT_NPROC="$GPUS"; else DEFAULT_NPROC={nproc}; fi
NPROC="${{NPROC:-$DEFAULT_NPROC}}"
RUN_DIR="${{RUN_DIR:-{run_dir}}}"
RESUME=""
if ls "$RUN_DIR"/checkpoints/checkpoint-*/trainer_state.json >/dev/null 2>&1; then RESUME="--resume"; fi
exec accelerate launch --config_file "accelerate_${{MODE}}.yaml" --num_processes "$NPROC" \\
  -m edgetune.cli train -c config.toml --run-dir "$RUN_DIR" $RESUME "$@"
"""


def load_source(source: Path) -> RunConfig:
    """A run directory's resolved config, or a config file resolved (defaults < its profile < the file)."""
    from edgetune.config import resolve

    source = Path(source)
    if source.is_dir():
        return runs.load_run_config(runs.require_run_dir(source))
    return resolve(source, check=True)


def _bundle(path: str, out: Path, sub: str, sink) -> str:
    """A local file copied into OUT/SUB/, returned as a path relative to OUT; hub ids and missing paths unchanged."""
    p = Path(path).expanduser()
    if not path or not p.is_file():
        return path
    (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(p, out / sub / p.name)
    sink(Note(f"copied {p} -> {out / sub / p.name}"))
    return f"{sub}/{p.name}"


def write_launch_config(source: Path, out: Path, nproc: int | None = None, profile: str | None = None,
                        sink=null_sink) -> Path:
    """Write DIR/config.toml, accelerate_ddp.yaml, accelerate_fsdp.yaml and run.sh; returns run.sh."""
    from importlib.metadata import version

    cfg = load_source(source)
    if profile:  # retune the hardware-dependent keys for the box (precision, 4-bit, batch, checkpointing)
        problems: list[str] = []
        apply_overrides(cfg, load_profile(profile), f"profile {profile}", problems)
        if problems:
            raise ConfigError(problems, hint="pick a profile from profiles/")
        cfg.profile = profile
    elif cfg.profile == "cpu":
        sink(Note("the config was resolved for a CPU (fp32, no 4-bit); pass --profile gpu-24gb (or the box's) to "
                  "retune it for GPUs", "warning"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.name = cfg.name or (source.name if source.is_dir() else source.stem)
    cfg.run_dir = f"runs/{runs.slug(cfg.name)}"
    cfg.train.nproc = nproc or max(cfg.train.nproc, 2)
    cfg.data.path = _bundle(cfg.data.path, out, "data", sink)
    cfg.data.stage_paths = [f"{m}={_bundle(p, out, 'data', sink)}" for m, _, p in
                            (s.partition("=") for s in cfg.data.stage_paths)]
    cfg.model.chat_template = _bundle(cfg.model.chat_template, out, "templates", sink)
    if Path(cfg.model.ref).expanduser().exists():
        sink(Note(f"model.ref {cfg.model.ref} is a local path: copy it to the same path on the box, or set a hub id "
                  "in config.toml", "warning"))
    for spec in cfg.method.rewards if "grpo" in (cfg.method.name, *cfg.method.stages) else []:
        if ":" in spec.partition("=")[0]:
            sink(Note(f"reward {spec}: its module must be importable on the box too", "warning"))
    cfg.save(out / runs.CONFIG)
    runs.atomic_write_text(out / "accelerate_ddp.yaml", DDP_YAML.format(nproc=cfg.train.nproc))
    runs.atomic_write_text(out / "accelerate_fsdp.yaml", FSDP_YAML.format(nproc=cfg.train.nproc))
    script = out / "run.sh"
    runs.atomic_write_text(script, RUN_SH.format(name=cfg.name, version=version("edgetune"), nproc=cfg.train.nproc,
                                                 run_dir=cfg.run_dir))
    script.chmod(0o755)
    return script
