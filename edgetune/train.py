"""The train stage: plan (data, memory), load through an engine, run the method's TRL trainer, save the adapter.

Everything lands in the run directory; Ctrl-C writes a checkpoint and `resume=True` continues from it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from edgetune import distributed, runs
from edgetune.config import RunConfig
from edgetune.errors import Interrupted, RunDirError, TrainError
from edgetune.events import CheckpointSaved, Note, StageFinished, StageStarted, null_sink


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    steps: int
    final_loss: float | None
    seconds: float


CALIBRATION_ROWS = 32  # training texts the importance matrix runs over
HELDOUT_ROWS = 6  # held-out texts export verification compares on (beside generic ones)


def longest_sequence(cfg: RunConfig, tokenizer, train_ds) -> int | None:
    """Tokens in the longest sequence a step can hold, from the data itself: batches pad to their longest row, so
    the peak follows that, not `train.max_length`. GRPO: the longest prompt plus `method.max_completion_length`.
    None when packing fills every sequence to max_length. Preference rows are tokenized only for the 32 longest by
    characters (a close proxy), so this stays quick on large sets."""
    if cfg.method.name == "cpt":  # packed blocks: max_length, or less for a corpus shorter than one block
        return max(map(len, train_ds["input_ids"]), default=0) or None
    if cfg.method.name == "sft":
        return None if cfg.train.packing else max(map(len, train_ds["input_ids"]), default=0) or None
    parts = {"dpo": ("chosen", "rejected"), "kto": ("completion",), "grpo": ()}[cfg.method.name]
    convs = [row["prompt"] + row[k] for row in train_ds for k in parts] if parts else list(train_ds["prompt"])

    def chars(msgs):
        return sum(len(m["content"]) for m in msgs)

    longest = sorted(convs, key=chars, reverse=True)[:32]
    tokens = max((len(tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=not parts,
                                                     return_dict=True)["input_ids"]) for c in longest), default=0)
    if cfg.method.name == "grpo":
        tokens += cfg.method.max_completion_length
    return min(tokens, cfg.train.max_length) or None


def plan_memory(cfg: RunConfig, model_path: str, hw, precision, sink, longest: int | None = None,
                engine: str | None = None):
    """Print the memory plan and apply its batch: one the method's trainer accepts, shrunk to fit the machine
    (keeping the effective batch); returns the MemoryPlan. `longest`: tokens in the longest sequence of this data
    (see longest_sequence); `engine`: the engine's name (else the one cfg would pick)."""
    from transformers import AutoConfig

    from edgetune.memory import ModelShape, plan

    try:
        shape = ModelShape.from_config(AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code))
    except Exception as e:  # an estimate must never block training; the batch rules still apply
        sink(Note(f"memory estimate unavailable ({type(e).__name__})", "warning"))
        shape = None
    p = plan(cfg, shape, hw, precision, longest, engine)
    cfg.train.batch_size, cfg.train.grad_accum = p.batch, p.grad_accum
    for text, level in p.notes:
        sink(Note(text, level))
    return p


PLAN_TERMS = ("weights", "adapter", "activations", "logits", "overhead")


def record_plan(run_dir: Path, p, device: str) -> None:
    """The plan beside the run (report.json "memory_plan"), so a measured peak can be set against it later."""
    from edgetune.runs import update_report

    est = p.estimate
    update_report(run_dir, "memory_plan", {
        "device": device, "method": p.method, "batch": p.batch, "grad_accum": p.grad_accum, "seq_len": p.seq_len,
        "seq_len_from_data": p.from_data, "budget_gb": round(p.budget_gb, 3),
        **({"step_gb": round(est.total_gb, 3), "loading_gb": round(est.loading_gb, 3), "peak_gb": round(est.peak_gb, 3),
            "terms": {k: round(getattr(est, f"{k}_gb"), 3) for k in PLAN_TERMS}} if est else {}), "units": "GiB"})


def prepare_method_rows(cfg: RunConfig, run_dir: Path, sink, tokenizer=None):
    """Preference (dpo, kto) or prompt/answer (grpo) rows, checked with file:line problems."""
    from datasets import Dataset

    from edgetune.data.preference import load_method_rows

    rows, problems = load_method_rows(cfg.data.path, cfg.method.name, cfg.data.split, cfg.data.system_prompt)
    if cfg.data.max_examples:
        rows = rows[: cfg.data.max_examples]
    report = {"source": cfg.data.path, "format": cfg.method.name, "n_valid": len(rows), "n_rejected": len(problems),
              "problems": [p.to_dict() for p in problems]}
    write_data_report(run_dir, report)
    sink(Note(f"data: {len(rows)} {cfg.method.name} rows, {len(problems)} rejected"))
    for p in problems[:5]:
        sink(Note(f"skipped {p}", "warning"))
    ds, eval_ds = Dataset.from_list(rows), None
    if cfg.data.eval_fraction > 0 and len(ds) >= 10 and cfg.method.name != "grpo":
        split = ds.train_test_split(test_size=cfg.data.eval_fraction, seed=cfg.train.seed)
        ds, eval_ds = split["train"], split["test"]
    if tokenizer is not None:
        def render(r):
            reply = r.get("chosen") or r.get("completion") or [{"role": "assistant", "content": r.get("answer", "")}]
            return tokenizer.apply_chat_template(r["prompt"] + reply, tokenize=False)
        write_later_texts(run_dir, [render(r) for r in ds], [render(r) for r in eval_ds] if eval_ds else None)
    return ds, eval_ds


def prepare_data(cfg: RunConfig, tokenizer, run_dir: Path, sink):
    """Tokenize and mask the dataset, write data_report.json, and split off an eval set if asked."""
    from edgetune.data import build_dataset, ensure_chat_template, install_chat_template

    if cfg.method.name == "cpt":  # raw text: no chat template in the data (a later SFT stage uses the model's)
        from edgetune.cpt import prepare_text

        if cfg.model.chat_template:  # a base model needs none for raw text; kept for samples and later stages
            install_chat_template(tokenizer, cfg.model.chat_template)
        ds, eval_ds = prepare_text(cfg, tokenizer, run_dir, sink)
        write_decoded(run_dir, tokenizer, ds, eval_ds)
        return ds, eval_ds
    if cfg.method.name != "sft":  # TRL renders these rows itself: no loss mask of ours to check
        install_chat_template(tokenizer, cfg.model.chat_template)
        return prepare_method_rows(cfg, run_dir, sink, tokenizer)
    ensure_chat_template(tokenizer, cfg.model.chat_template)
    ds, report = build_dataset(tokenizer, cfg.data, cfg.train.max_length)
    write_data_report(run_dir, report.to_dict())
    sink(Note(f"data: {report.n_valid} examples ({report.format}), {report.n_rejected} rejected, "
              f"masked fraction {report.masked_fraction:.2f}"
              + (f", {report.n_sequences} training sequences" if report.n_sequences > report.n_valid else "")))
    for note in report.mask_notes:
        sink(Note(f"chat template: {note}"))
    for p in report.problems[:5]:
        sink(Note(f"skipped {p}", "warning"))
    eval_ds = None
    if cfg.data.eval_fraction > 0 and len(ds) >= 10:
        split = ds.train_test_split(test_size=cfg.data.eval_fraction, seed=cfg.train.seed)
        ds, eval_ds = split["train"], split["test"]
    write_decoded(run_dir, tokenizer, ds, eval_ds)
    return ds, eval_ds


def write_decoded(run_dir: Path, tokenizer, ds, eval_ds) -> None:
    def decode(d):
        return [tokenizer.decode(ids) for ids in d["input_ids"]]
    write_later_texts(run_dir, decode(ds), decode(eval_ds) if eval_ds is not None else None)


def write_data_report(run_dir: Path, report: dict) -> None:
    if distributed.is_main():  # every rank prepares the same data; one writes it down
        runs.atomic_write_text(run_dir / runs.DATA_REPORT, json.dumps(report, indent=2, default=str))


def write_later_texts(run_dir: Path, train_texts: list[str], heldout: list[str] | None) -> None:
    """What later stages read instead of re-deriving the split: the held-out texts exactly as training held them out
    (verification compares on them), and an even sample of training texts (the importance matrix's calibration)."""
    if not distributed.is_main():
        return
    step = max(1, len(train_texts) // CALIBRATION_ROWS)
    runs.write_texts(run_dir, runs.CALIBRATION, train_texts[::step][:CALIBRATION_ROWS])
    if heldout:
        runs.write_texts(run_dir, runs.HELDOUT, heldout[:HELDOUT_ROWS])
    else:
        (Path(run_dir) / runs.HELDOUT).unlink(missing_ok=True)


def train(cfg: RunConfig, sink=null_sink, resume: bool = False, stopper=None) -> TrainResult:
    """Train `cfg` into `cfg.run_dir` (every stage of `method.stages` in order, when given).

    `stopper` (a StopOnSignal) lets a UI stop it like Ctrl-C does.
    """
    if cfg.method.stages:
        from edgetune.stages import train_stages

        return train_stages(cfg, train_one, sink, resume, stopper)
    return train_one(cfg, sink, resume, stopper)


def train_one(cfg: RunConfig, sink=null_sink, resume: bool = False, stopper=None, init_adapter: Path | None = None) -> TrainResult:
    """One method into `cfg.run_dir`; `init_adapter` continues from an earlier stage's LoRA adapter."""
    from edgetune import engines, hardware, models
    from edgetune.callbacks import EventCallback, StopOnSignal

    t_start = time.time()
    run_dir = Path(cfg.run_dir)
    ckpt = check_resume(run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()

    sink(StageStarted("plan"))
    hw = hardware.detect(run_dir)
    precision = engines.choose_precision(cfg.train.precision, hw)
    distributed.check(cfg, hw)
    engine = engines.select(cfg.train.engine, hw, cfg)  # before trl is imported: Unsloth patches it
    sink(Note(f"hardware: {hw.describe()}; profile {cfg.profile or '-'}; engine {engine.name}; precision {precision.name}"))
    if getattr(engine, "imported_first", None):
        sink(Note(f"unsloth was imported after {', '.join(engine.imported_first)}, so it could not patch them "
                  "(slower, more memory): start training with `edgetune train`, or import unsloth first", "warning"))
    resolved = models.resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code, sink)
    resolved = pin_base(resolved, run_dir, sink)
    check_exportable(cfg, resolved, sink)
    tokenizer = engine.load_tokenizer(resolved, cfg)
    train_ds, eval_ds = prepare_data(cfg, tokenizer, run_dir, sink)
    memory_plan = plan_memory(cfg, resolved.path, hw, precision, sink, longest_sequence(cfg, tokenizer, train_ds),
                              engine.name)
    if main:
        record_plan(run_dir, memory_plan, hw.device)
    sink(Note(distributed.effective_batch_note(cfg)))
    if cfg.train.nproc > 1 and not distributed.inside_launch():
        sink(Note(f"train.nproc = {cfg.train.nproc}, but this process trains alone: `edgetune train --nproc` starts "
                  "the processes", "warning"))
    if distributed.inside_launch() and distributed.mode(cfg) == "fsdp" and hw.device == "cpu":
        sink(Note("train.distributed = fsdp needs GPUs (accelerate shards only on GPU process groups): on CPU the "
                  "processes train data parallel, each holding the whole model", "warning"))
    if main:
        cfg.save(run_dir / runs.CONFIG)
    sink(StageFinished("plan", time.time() - t_start))

    sink(StageStarted("load", resolved.ref))
    t0 = time.time()
    from transformers import set_seed

    set_seed(cfg.train.seed)  # LoRA init happens at load, before the Trainer seeds: same seed, same run
    model, tokenizer = engine.load_for_training(resolved, cfg, precision, init_adapter=init_adapter)
    ensure_template_kept(tokenizer, cfg)
    sink(StageFinished("load", time.time() - t0))

    stopper = stopper or StopOnSignal()
    callbacks = [EventCallback(sink, engine.name, cfg.method.name), stopper]
    if cfg.train.sample_every and main:
        from edgetune.callbacks import SampleCallback

        callbacks.append(SampleCallback(sink, tokenizer, sample_prompt(cfg, train_ds), cfg.train.sample_every))
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, cfg, run_dir / runs.CHECKPOINTS, precision,
                            callbacks, sink)
    sink(StageStarted("train", f"{cfg.method.name} with {engine.name}"))
    t0 = time.time()
    stopper.install()
    try:
        out = trainer.train(resume_from_checkpoint=str(ckpt) if resume else None)
    except KeyboardInterrupt:
        raise Interrupted("stopped by a second Ctrl-C before a checkpoint was written",
                          hint=f"resume from the last periodic checkpoint: edgetune train --resume --run-dir {run_dir}") from None
    except Exception as e:
        if "out of memory" in str(e).lower():
            raise TrainError(f"out of memory at step {trainer.state.global_step}",
                             hint="lower train.batch_size or train.max_length, or enable train.gradient_checkpointing "
                                  "and model.load_in_4bit") from None
        raise
    finally:
        stopper.uninstall()
    step = trainer.state.global_step
    if stopper.stop.is_set():
        last = runs.last_checkpoint(run_dir)
        sink(CheckpointSaved(step=step, path=str(last), reason="interrupt"))
        raise Interrupted(f"stopped at step {step}; checkpoint written to {last}",
                          hint=f"continue with: edgetune train --resume --run-dir {run_dir}")
    sink(StageFinished("train", time.time() - t0, f"{step} steps"))

    adapter_dir = run_dir / runs.ADAPTER
    if main:
        save_adapter(trainer.model, tokenizer, run_dir)
        sink(CheckpointSaved(step=step, path=str(adapter_dir), reason="final"))
    distributed.barrier()  # the other ranks return once the adapter is there (a next stage starts from it)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return TrainResult(run_dir, adapter_dir, step, losses[-1] if losses else out.training_loss, time.time() - t_start)


def check_resume(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuses --resume without one, and a fresh start over an existing run."""
    ckpt = runs.last_checkpoint(run_dir)
    if resume and ckpt is None:
        raise RunDirError(f"{run_dir}: nothing to resume (no checkpoints/checkpoint-N)",
                          hint="start without --resume; checkpoints are written every train.save_steps steps")
    if not resume and ckpt is not None:
        raise RunDirError(f"{run_dir} already holds checkpoints (latest {ckpt.name})",
                          hint="continue it with --resume, or pick a new --run-dir")
    return ckpt


def pin_base(resolved, run_dir: Path, sink):
    """Record the exact weights this run trains on (base.json; merge and export require the same) and load from
    that very folder: a hub id becomes its snapshot at the commit recorded."""
    from dataclasses import replace

    from edgetune import base_identity

    identity = base_identity.identify(resolved, sink)
    if distributed.is_main():
        base_identity.record(run_dir, identity)
    sink(Note(f"base weights: {identity.describe()}"))
    return replace(resolved, path=identity.path, revision=None) if resolved.kind == "hub" else resolved


def check_exportable(cfg: RunConfig, resolved, sink) -> None:
    """Say whether the model can be exported, and refuse now (not after training) an export it cannot have."""
    from edgetune import preflight

    support = preflight.export_support(preflight.model_config(resolved.path, resolved.revision,
                                                              cfg.model.trust_remote_code))
    sink(Note(support.describe(), "info" if support.gguf is None else "warning"))
    preflight.require_exports(cfg.export.gguf, cfg.export.onnx, support)


def sample_prompt(cfg: RunConfig, train_ds) -> str:
    """The first example's user turn: a prompt the run is learning to answer."""
    row = train_ds[0]
    if cfg.method.name == "cpt":  # no prompts in raw text: the first words of the corpus, to watch it continue
        from edgetune.data.text import read_documents

        return " ".join(read_documents(cfg.data.path)[0][0].text.split()[:12])
    if "prompt" in row:  # preference / GRPO rows
        return row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else str(row["prompt"])
    from edgetune.data import load_conversations  # SFT rows are token ids by now: read the first conversation

    convs, _, _ = load_conversations(cfg.data)
    return next(m["content"] for m in convs[0] if m["role"] == "user")


def build_trainer(model, tokenizer, train_ds, eval_ds, cfg: RunConfig, out: Path, precision, callbacks, sink):
    from edgetune.methods import grpo, preference, sft

    if cfg.method.name in ("sft", "cpt"):  # cpt: packed blocks with labels = input_ids, through the same trainer
        return sft.build_trainer(model, tokenizer, train_ds, eval_ds, cfg, out, precision, callbacks)
    if cfg.method.name in ("dpo", "kto"):
        return preference.build_trainer(model, tokenizer, train_ds, eval_ds, cfg, out, precision, callbacks)
    return grpo.build_trainer(model, tokenizer, train_ds, eval_ds, cfg, out, precision, callbacks, sink)


def ensure_template_kept(tokenizer, cfg: RunConfig) -> None:
    """An engine may reload the tokenizer; re-apply a user template override so saving keeps it."""
    if cfg.model.chat_template:
        from edgetune.data import ensure_chat_template

        ensure_chat_template(tokenizer, cfg.model.chat_template)


def save_adapter(model, tokenizer, run_dir: Path) -> Path:
    """Write adapter/ atomically: a crash mid-save never leaves a half adapter at the final path."""
    final = run_dir / runs.ADAPTER
    tmp = runs.temp_dir_beside(final)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    runs.replace_dir(tmp, final)
    return final
