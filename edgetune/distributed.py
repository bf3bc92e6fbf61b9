"""Data-parallel training on N processes: `edgetune train --nproc N` (or `train.nproc`).

The launcher here starts N copies of `python -m edgetune.cli train -c RUN/config.toml` with torch.distributed's env://
contract (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), the same variables `torchrun` and
`accelerate launch` set; inside each process the Trainer's accelerate state joins the process group (NCCL with one GPU
per rank, gloo on CPU). Rank 0 alone writes the run directory (config, data report, metrics, checkpoints, adapter);
the other ranks train and stay quiet. Ctrl-C reaches the launcher, which passes it on once to every rank; the ranks
agree on the stop after each step (one all-reduce), so all of them write the same checkpoint step and `--resume`
continues as on one process. The workers run in their own session, so a terminal's Ctrl-C is not delivered twice.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from edgetune.errors import ConfigError

MODES = ("ddp", "fsdp")


def world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the launcher's environment; (0, 0, 1) in a plain process."""
    def env(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default
    return env("RANK", 0), env("LOCAL_RANK", 0), env("WORLD_SIZE", 1)


def is_main() -> bool:
    return world()[0] == 0


def inside_launch() -> bool:
    """True in a worker started by this launcher, torchrun or accelerate launch."""
    return world()[2] > 1


def check(cfg, hw) -> None:
    """Refuse before anything starts what cannot run on N processes here; set up a CPU worker."""
    n, problems = cfg.train.nproc, []
    if n > 1 and cfg.train.engine == "unsloth":
        problems.append("`train.engine` = 'unsloth' with `train.nproc` > 1: edgetune trains on several processes "
                        "with the hf engine; set train.engine = \"hf\" (or auto)")
    if n > 1 and hw.device == "cuda":
        import torch

        if torch.cuda.device_count() < n:
            problems.append(f"`train.nproc` = {n} but this machine has {torch.cuda.device_count()} GPU(s); "
                            "data parallel runs one process per GPU")
    if mode(cfg) == "fsdp" and cfg.model.load_in_4bit:
        problems.append("`train.distributed` = 'fsdp' with `model.load_in_4bit`: edgetune's FSDP option shards a "
                        "16-bit LoRA; set model.load_in_4bit = false (or use ddp for QLoRA)")
    if problems:
        raise ConfigError(problems, hint="fix the listed fields, or train with --nproc 1")
    if inside_launch() and hw.device == "cpu":
        # CPU ranks as plain `cpu`: transformers maps a resumed optimizer to args.device on several processes, and
        # torch cannot restore storage to accelerate's default `cpu:<rank>`
        os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")


def accelerate_fsdp() -> bool:
    """`accelerate launch` with an FSDP config file (run.sh MODE=fsdp) says so in the environment."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def mode(cfg) -> str:
    return "fsdp" if accelerate_fsdp() else cfg.train.distributed


def effective_batch_note(cfg) -> str:
    t = cfg.train
    n = world()[2]  # the processes actually training (train.nproc is what the CLI starts)
    return (f"effective batch {t.batch_size * t.grad_accum * n} = {t.batch_size} per device x {t.grad_accum} "
            f"accumulation x {n} process{'es' if n > 1 else ''}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(run_dir: Path, nproc: int, resume: bool) -> int:
    """Run the training of RUN_DIR/config.toml on `nproc` local processes; the exit code is rank 0's (130 after a
    stop). A worker that fails stops the others."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
               "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
        cmd = [sys.executable, "-m", "edgetune.cli", "train", "-c", str(Path(run_dir) / "config.toml"),
               "--run-dir", str(run_dir), *(["--resume"] if resume else [])]
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = wait_all(procs)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if codes[0] or not any(codes):
        return codes[0]
    return next(c for c in codes if c)  # rank 0 finished, another did not


def wait_all(procs) -> list[int]:
    """Wait for every worker; when one fails (not a clean stop), end the rest instead of leaving them hanging in a
    collective that will never complete."""
    import time

    while any(p.poll() is None for p in procs):
        failed = [p for p in procs if p.poll() not in (None, 0, 130)]
        if failed:
            time.sleep(5)  # the others may be writing their own error; then stop them
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(0.2)
    return [p.wait() for p in procs]


def agree_to_stop(local_stop: bool, device) -> bool:
    """Whether any rank was asked to stop (all ranks must stop after the same step, or a collective hangs)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return local_stop
    flag = torch.tensor([1 if local_stop else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def trainer_kwargs(cfg) -> dict:
    """TrainingArguments for the chosen mode: DDP needs nothing beyond the environment; FSDP shards the model."""
    if not inside_launch():
        return {}
    if cfg.train.distributed != "fsdp" or accelerate_fsdp():  # DDP, or FSDP set up by accelerate's config file
        return {} if accelerate_fsdp() else {"ddp_find_unused_parameters": False}
    return {"fsdp": "full_shard auto_wrap",
            "fsdp_config": {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
                            "state_dict_type": "SHARDED_STATE_DICT", "cpu_ram_efficient_loading": False}}
