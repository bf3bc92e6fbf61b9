"""The `edgetune` command line: one thin function per command over the headless core.

User errors (EdgetuneError) print a titled message without a traceback and exit 1 (130 after Ctrl-C).
"""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import Optional

import typer

from edgetune.config import field_help as H
from edgetune.errors import EdgetuneError, Interrupted
from edgetune.cli_scaleout import (IMPORT_ADAPTER, IMPORT_MODEL, IMPORT_RUN_DIR, handoff_app, import_target as _target,
                                   launch_config, run_training)
from edgetune.distributed import is_main

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None, pretty_exceptions_show_locals=False,
                  help="Fine-tune an open LLM with QLoRA on your machine, export GGUF, chat offline.")


def _overrides(**flags) -> dict:
    """CLI flags -> a nested partial config; flags left unset (None) do not override anything."""
    out: dict = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        section, _, name = dotted.partition("__")
        if name:
            out.setdefault(section, {})[name] = value
        else:
            out[section] = value
    return out


def _sink():
    from edgetune.console import RichSink

    return RichSink()


@app.callback(invoke_without_command=True)
def root(ctx: typer.Context):
    """Fine-tune an open LLM with QLoRA on your machine, export GGUF, chat offline."""
    if ctx.invoked_subcommand is None:
        _open_tui(None)  # no command: the full-screen app (`edgetune tui`)


@app.command()
def tui(run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Open this run directory at its next stage.")):
    """Open the full-screen app: setup, train, export, chat, runs (the same as `edgetune` with no command)."""
    _open_tui(run_dir)


def _open_tui(run_dir: Optional[Path]) -> None:
    from edgetune.tui.app import make_app  # lazy: the CLI module stays free of the UI toolkit

    tui_app = make_app(run_dir=run_dir)
    tui_app.run()
    raise typer.Exit(tui_app.return_code or 0)


@app.command()
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=H("model.ref")),
    data: Optional[str] = typer.Option(None, "--data", "-d", help=H("data.path")),
    method: Optional[str] = typer.Option(None, "--method", help=H("method.name")),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help=H("train.max_steps")),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help=H("run_dir")),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file (a resolved config.toml from a run works too)."),
    profile: Optional[str] = typer.Option(None, "--profile", help=H("profile")),
    engine: Optional[str] = typer.Option(None, "--engine", help=H("train.engine")),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last checkpoint."),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help=H("train.learning_rate")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=H("train.batch_size")),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help=H("train.grad_accum")),
    max_length: Optional[int] = typer.Option(None, "--max-length", help=H("train.max_length")),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help=H("train.save_steps")),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help=H("lora.r")),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help=H("lora.alpha")),
    load_in_4bit: Optional[bool] = typer.Option(None, "--4bit/--no-4bit", help=H("model.load_in_4bit")),
    packing: Optional[bool] = typer.Option(None, "--packing/--no-packing", help=H("train.packing")),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help=H("model.trust_remote_code")),
    name: Optional[str] = typer.Option(None, "--name", help=H("name")),
    stages: Optional[str] = typer.Option(None, "--stages", help=H("method.stages") + " Comma-separated."),
    stage_data: list[str] = typer.Option([], "--stage-data", help=H("data.stage_paths") + " Comma-separated or repeated."),
    reward: list[str] = typer.Option([], "--reward", help=H("method.rewards") + " Repeatable."),
    beta: Optional[float] = typer.Option(None, "--beta", help=H("method.beta")),
    num_generations: Optional[int] = typer.Option(None, "--num-generations", help=H("method.num_generations")),
    loss_type: Optional[str] = typer.Option(None, "--loss-type", help=H("method.loss_type")),
    importance_sampling: Optional[str] = typer.Option(None, "--importance-sampling", help=H("method.importance_sampling_level")),
    scale_rewards: Optional[str] = typer.Option(None, "--scale-rewards", help=H("method.scale_rewards")),
    chat_template: Optional[str] = typer.Option(None, "--chat-template", help=H("model.chat_template")),
    gguf: list[str] = typer.Option([], "--gguf", help=H("export.gguf") + " Checked before training; `none` "
                                   "to train a model edgetune cannot export to GGUF. Repeatable."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help=H("train.nproc")),
):
    """Fine-tune a model with LoRA/QLoRA (SFT, DPO, KTO, GRPO, CPT on raw text, or --stages cpt,sft,dpo) into a run directory."""
    from edgetune import config as C
    from edgetune import runs
    from edgetune.hardware import detect_profile

    if resume and run_dir is None:
        raise EdgetuneError("--resume needs --run-dir", hint="pass the run directory to continue", title="Missing option")
    if resume and config is None and (run_dir / runs.CONFIG).is_file():
        config = run_dir / runs.CONFIG  # the resolved config of the run being continued
    flags = _overrides(model__ref=model, data__path=data, method__name=method, train__max_steps=max_steps,
                       train__engine=engine, train__learning_rate=learning_rate, train__batch_size=batch_size,
                       train__grad_accum=grad_accum, train__max_length=max_length, train__save_steps=save_steps,
                       lora__r=lora_r, lora__alpha=lora_alpha, model__load_in_4bit=load_in_4bit,
                       train__packing=packing, model__trust_remote_code=trust_remote_code, name=name,
                       run_dir=str(run_dir) if run_dir else None,
                       method__stages=[x.strip() for x in stages.split(",") if x.strip()] if stages else None,
                       data__stage_paths=[x.strip() for v in stage_data for x in v.split(",") if x.strip()] or None, method__rewards=reward or None, method__beta=beta,
                       method__num_generations=num_generations, model__chat_template=chat_template,
                       method__loss_type=loss_type, method__importance_sampling_level=importance_sampling,
                       method__scale_rewards=scale_rewards,
                       export__gguf=([] if [g.lower() for g in gguf] == ["none"] else gguf) if gguf else None,
                       train__nproc=nproc)
    cfg = C.resolve(config, flags, profile, detect_profile=detect_profile)
    if not cfg.run_dir:
        cfg.name = cfg.name or runs.slug(f"{Path(cfg.model.ref).stem}-{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        cfg.run_dir = str(runs.default_run_dir(cfg.name))
    cfg.name = cfg.name or Path(cfg.run_dir).name
    result = run_training(cfg, resume)  # one process, or N through edgetune.distributed
    if result is None:  # a worker other than rank 0: it stays quiet
        return
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "-"
    typer.echo(f"trained {result.steps} steps in {result.seconds:.0f} s, final loss {loss}; adapter: {result.adapter_dir}")
    typer.echo(f"next: edgetune merge {result.run_dir}")


@app.command()
def validate(
    data: str = typer.Option(..., "--data", "-d", help=H("data.path")),
    model: str = typer.Option("default", "--model", "-m", help="Model whose tokenizer and chat template are used."),
    method: str = typer.Option("sft", "--method", help=H("method.name")),
    data_format: str = typer.Option("auto", "--format", help=H("data.format")),
    max_length: int = typer.Option(1024, "--max-length", help=H("train.max_length")),
    chat_template: str = typer.Option("", "--chat-template", help=H("model.chat_template")),
    allow_skips: bool = typer.Option(False, "--allow-skips", help="Exit 0 when some rows are rejected but enough remain."),
    gguf: list[str] = typer.Option([], "--gguf", help="GGUF types the run will export (default: export.gguf's "
                                   "default); `none` to check the data only. Repeatable."),
    onnx: list[str] = typer.Option([], "--onnx", help="ONNX variants the run will export. Repeatable."),
):
    """Check a dataset: format, valid examples, token lengths, masked fraction and every problem.

    Exits 1 when the data is unusable, when the model cannot be exported as asked (--gguf, --onnx), or (without
    --allow-skips) when any row would be skipped.
    """
    from edgetune.validate import run_validate

    types = None if not gguf else [] if [g.lower() for g in gguf] == ["none"] else gguf
    ok = run_validate(data, model, method, data_format, max_length, chat_template, _sink(), allow_skips=allow_skips,
                      gguf=types, onnx=onnx)
    raise typer.Exit(0 if ok else 1)


@app.command()
def merge(run_dir: Path = typer.Argument(..., help="Run directory with adapter/ (from `edgetune train`).")):
    """Dequantize the base to 16-bit, merge the LoRA adapter, save RUN_DIR/merged."""
    from edgetune.merge import merge as run_merge

    sink = _sink()
    try:
        result = run_merge(run_dir, sink)
    finally:
        sink.close()
    typer.echo(f"merged: {result.merged_dir} ({result.dtype}); max logit diff vs base+adapter {result.max_logit_diff:.4f}")


@app.command()
def export(
    run_dir: Optional[Path] = typer.Argument(None, help="Run directory (merged first if it has only an adapter)."),
    gguf: list[str] = typer.Option([], "--gguf", help=H("export.gguf") + " Repeatable; `auto` picks by --max-kld."),
    max_kld: Optional[float] = typer.Option(None, "--max-kld", help=H("export.max_kld")),
    imatrix: Optional[bool] = typer.Option(None, "--imatrix/--no-imatrix", help=H("export.imatrix")),
    keep_f16: Optional[bool] = typer.Option(None, "--keep-f16", help=H("export.keep_f16")),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Rows with prompt/answer: adds a task score per GGUF file (and to the auto table)."),
    match: str = typer.Option("exact", "--match", help="Task-score rule with --eval-data: exact | prefix[:k] | contains[:k] | regex:PATTERN."),
    onnx: list[str] = typer.Option([], "--onnx", help="ONNX variant for onnxruntime: fp32 | fp16 | int8 | int4. "
                                   "Repeatable; alone, it skips the GGUF export. Without --gguf and --onnx, the run's export.gguf / export.onnx."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=IMPORT_MODEL),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help=IMPORT_ADAPTER),
    out: Optional[Path] = typer.Option(None, "--run-dir", "-o", help=IMPORT_RUN_DIR),
):
    """Export to GGUF (offline: no compiler, no llama.cpp checkout) and/or ONNX, verify each file, write the Modelfile.

    A run trained elsewhere: --model MERGED_DIR, or --model BASE --adapter PEFT_DIR (made into a run directory first).
    """
    from edgetune.export.gguf_export import export_gguf
    from edgetune.export.onnx_export import export_onnx

    run_dir = Path(_target(run_dir, model, adapter, out))

    if not gguf and not onnx:  # no flags: what the run's config asks for (export.gguf, export.onnx)
        from edgetune.errors import ConfigError
        from edgetune.runs import load_run_config

        cfg = load_run_config(run_dir)
        gguf, onnx = list(cfg.export.gguf), list(cfg.export.onnx)
        if not gguf and not onnx:
            raise ConfigError([f"{run_dir}: export.gguf and export.onnx are both empty in the run's config"],
                              hint="pass --gguf q4_k_m and/or --onnx int4")
    sink = _sink()
    try:
        result = export_gguf(run_dir, gguf, sink, max_kld=max_kld, imatrix=imatrix, keep_f16=keep_f16,
                             eval_data=eval_data, match=match) if gguf else None
        onnx_results = export_onnx(run_dir, onnx, sink) if onnx else []
    finally:
        sink.close()
    if result is not None:
        _print_export_table(result)
    if onnx_results:
        _print_onnx_table(onnx_results)


def _print_onnx_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ONNX export (verified against the merged model)")
    for col in ("variant", "size MB", "top-1", "mean KLD", "stops at EOS", "status"):
        table.add_column(col, no_wrap=True)
    for r in results:
        table.add_row(r["type"], f"{r['size_bytes'] / 1e6:.1f}", f"{r['top1']:.3f}", f"{r['mean_kld']:.4f}",
                      "yes" if r["stops_at_eos"] else "NO", "ok" if r["passed"] else "FAILED")
    Console().print(table)
    for r in results:
        typer.echo(f"wrote {r['path']}/")
    typer.echo(f"chat: edgetune chat {results[-1]['path']}")


def _print_export_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GGUF export (verified against the merged model)")
    scored = any("task_score" in r for r in result.results)
    cols = ("type", "size MB", "top-1", "mean KLD", *(("task",) if scored else ()), "token ids", "stops at EOS", "kept", "status")
    for col in cols:
        table.add_column(col, no_wrap=True)
    for r in result.results:
        task = (f"{r['task_score']:.3f}" if "task_score" in r else "-",) if scored else ()
        table.add_row(r["type"].upper(), f"{r['size_bytes'] / 1e6:.1f}", f"{r['top1']:.3f}", f"{r['mean_kld']:.4f}",
                      *task, "identical" if r["token_ids_identical"] else "DIFFER", "yes" if r["stops_at_eos"] else "NO",
                      "yes" if r.get("kept", True) else "no", "ok" if r["passed"] else "FAILED")
    Console().print(table)
    if result.chosen:
        typer.echo(f"auto: kept {result.chosen.upper()}")
    if result.modelfile:
        typer.echo(f"Ollama: cd {result.modelfile.parent} && ollama create NAME -f Modelfile")
    for f in result.files:
        typer.echo(f"wrote {f}")
    if result.files:
        typer.echo(f"chat: edgetune chat {result.files[-1]}")


@app.command(name="eval")
def eval_cmd(
    target: Optional[str] = typer.Argument(None, help="A run directory (base, merged and every GGUF side by side), an HF dir or a .gguf."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Eval rows with `prompt` and `answer` (.jsonl/.json); "
                                       "preference pairs; or raw domain text (.txt/.md, a folder, .jsonl with `text`) "
                                       "for held-out perplexity. Default on a cpt run: its held-out text."),
    match: str = typer.Option("exact", "--match", help="exact | prefix[:k] | contains[:k] (first k words of the answer) | regex:PATTERN (searched in the reply, like the regex_format reward)."),
    max_tokens: int = typer.Option(128, "--max-tokens", help="Longest reply in tokens."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt (default: the run's data.system_prompt)."),
    block: Optional[int] = typer.Option(None, "--block", help="Perplexity: tokens per scored block (default: the run's train.max_length, at most 1024)."),
    probe: Optional[bool] = typer.Option(None, "--probe/--no-probe", help=H("eval.probe") + " Default: on for a run dir (eval.probe), off for a single model."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help=H("eval.max_probe_drop") + " Default: the run's."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=IMPORT_MODEL),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help=IMPORT_ADAPTER),
    out: Optional[Path] = typer.Option(None, "--run-dir", "-o", help=IMPORT_RUN_DIR),
):
    """Task score and held-out loss for the base, merged and exported models, side by side, and the forgetting check.

    With preference pairs (prompt/chosen/rejected rows): preference accuracy and log-prob margin instead. With raw
    text: held-out perplexity (what continued pretraining lowers). On a run, also the general-ability probe, base vs
    tuned, with a warning when the tuned model lost more than eval.max_probe_drop points; all in report.md.
    """
    from edgetune import runs
    from edgetune.data.text import is_text_corpus
    from edgetune.eval_tables import print_perplexity, print_probe
    from edgetune.evaluate import run_eval
    from edgetune.forgetting import run_probe
    from edgetune.perplexity import heldout_text_of, run_perplexity

    target = _target(target, model, adapter, out)
    is_run = (Path(target) / runs.CONFIG).is_file()
    if probe is None:
        probe = is_run and runs.load_run_config(Path(target)).eval.probe
    text = data is None and heldout_text_of(Path(target)) is not None or data is not None and is_text_corpus(data)
    if data is None and not text and not probe:
        raise EdgetuneError("nothing to evaluate: no --data, no held-out domain text in the target, and --no-probe",
                            hint="pass --data (eval rows, preference pairs, or raw text) or --probe", title="Missing option")
    sink, shown = _sink(), []
    try:
        if text:
            shown.append(partial(print_perplexity, run_perplexity(target, data, block, sink=sink)))
        elif data is not None and _is_pairs(data):
            _eval_pairs(target, data, sink, system)
        elif data is not None:
            shown.append(partial(_print_eval_table, run_eval(target, data, max_tokens=max_tokens, match=match,
                                                             sink=sink, system=system)))
        if probe:
            shown.append(partial(print_probe, run_probe(target, max_drop, sink)))
    finally:
        sink.close()
        if is_run and (Path(target) / runs.REPORT).is_file():
            from edgetune.export.report_md import write_report_md

            write_report_md(Path(target))
    for show in shown:
        show()


def _is_pairs(data: str) -> bool:
    from edgetune.data.load import read_rows

    try:
        first = read_rows(data, problems=[])[:1]
    except EdgetuneError:
        return False
    return bool(first) and {"prompt", "chosen", "rejected"} <= set(first[0][1])


def _eval_pairs(target: str, data: str, sink, system: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgetune.data.preference import load_method_rows
    from edgetune.evaluate import targets_for
    from edgetune.runs import load_run_config, update_report
    from edgetune.preference_eval import score_pairs

    if system is None and (Path(target) / "config.toml").is_file():
        system = load_run_config(Path(target)).data.system_prompt  # as training saw its prompts
    rows, _ = load_method_rows(data, "dpo", system_prompt=system or "")
    targets = [t for t in targets_for(target, sink) if not t[0].endswith(".gguf")]
    results = score_pairs(targets, rows, sink)
    if (Path(target) / "config.toml").is_file():
        update_report(Path(target), "preference_eval", {"data": data, "targets": results})
    table = Table(title="held-out preference pairs")
    for col in ("model", "preference accuracy", "mean log-prob margin", "pairs"):
        table.add_column(col)
    for r in results:
        table.add_row(r["label"], f"{r['preference_accuracy']:.3f}", f"{r['mean_margin']:+.3f}", str(r["n"]))
    Console().print(table)


def _print_eval_table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="eval")
    for col in ("model", "backend", "task score", "held-out loss", "rows", "seconds"):
        table.add_column(col)
    for r in results:
        loss = r.get("heldout_loss")
        table.add_row(str(r["label"]), str(r["backend"]), f"{r['task_score']:.3f}",
                      f"{loss:.4f}" if loss is not None else "-", str(r["n"]), f"{r['seconds']:.1f}")
    Console().print(table)


@app.command()
def chat(
    model: Optional[str] = typer.Argument(None, help="A run directory, a merged HF directory, a .gguf file or an ONNX folder."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    backend: str = typer.Option("auto", "--backend", help="auto | hf | llamacpp | onnx"),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Longest reply in tokens."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (reproducible)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Answer this one prompt and exit."),
    compare: Optional[str] = typer.Option(None, "--compare", help="A second model (e.g. the base) answering every prompt too."),
    repeat_penalty: float = typer.Option(1.1, "--repeat-penalty", help="Repetition penalty (1.0 = off; 1.1 is Ollama's default)."),
    base: Optional[str] = typer.Option(None, "--model", "-m", help=IMPORT_MODEL),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help=IMPORT_ADAPTER),
    out: Optional[Path] = typer.Option(None, "--run-dir", "-o", help=IMPORT_RUN_DIR),
):
    """Chat with a model offline; with piped stdin, one reply per input line."""
    from edgetune.chat import chat_loop, open_chat

    model = _target(model, base, adapter, out)

    kw = dict(system=system, max_tokens=max_tokens, temperature=temperature, repeat_penalty=repeat_penalty)
    session = open_chat(model, backend=backend, **kw)
    other = open_chat(compare, backend="auto", **kw) if compare else None
    chat_loop(session, prompt=prompt, compare=other)


@app.command()
def demo(
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Where to write the run (default runs/demo-<time>)."),
    max_steps: int = typer.Option(40, "--max-steps", help="SFT steps on the shipped pirate data."),
):
    """The main job on the embedded SmolLM2, offline: fine-tune -> merge -> GGUF (verified) -> chat, before/after."""
    from edgetune.demo import DEMO_PROMPTS, run_demo

    sink = _sink()
    try:
        out = run_demo(run_dir, max_steps, sink)
    finally:
        sink.close()
    _print_export_table(out["export"])
    _print_eval_table(out["eval"])
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="before (base, transformers) vs after (tuned Q4_K_M, llama.cpp)", show_lines=True)
    for col in ("prompt", "before", "after", "finish"):
        table.add_column(col, overflow="fold")
    for p, (b, _), (a, finish) in zip(DEMO_PROMPTS, out["before"], out["after"]):
        table.add_row(escape(p), escape(b), escape(a), finish)
    Console().print(table)
    run = out["run_dir"]
    typer.echo(f"demo finished in {out['seconds'] / 60:.1f} min; report: {run}/report.md")
    typer.echo(f"chat with it: edgetune chat {out['q4']}")


@app.command()
def doctor():
    """Show what this machine offers: torch, CUDA, unsloth, bitsandbytes, the llama.cpp binding, disk."""
    from edgetune.doctor import report

    ok = report()
    raise typer.Exit(0 if ok else 1)


from edgetune.cli_posttrain import distill_cmd, merge_adapters_cmd  # noqa: E402 - commands kept in their own module

app.command(name="distill")(distill_cmd)
app.command(name="merge-adapters")(merge_adapters_cmd)
app.command(name="launch-config")(launch_config)
app.add_typer(handoff_app, name="handoff")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    # SIGTERM (kill, a closing terminal) unwinds like Ctrl-C, so temp files are removed and nothing half-written
    # is left at a final path.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("train", "tui"):  # before anything imports transformers, TRL or PEFT
        from edgetune.engines.choose import engine_asked, preload_unsloth

        preload_unsloth(engine_asked(argv))
    if argv and argv[0] not in ("--help", "-h", "tui"):  # the app quiets libraries itself, in a worker
        from edgetune.console import quiet_libraries

        quiet_libraries()
    from edgetune.console import render_error

    try:
        rv = app(args=argv, standalone_mode=False, prog_name="edgetune")
        return rv if isinstance(rv, int) else 0
    except Interrupted as e:
        if is_main():  # on N processes every rank stops; one says so
            render_error(e)
        return 130
    except EdgetuneError as e:
        render_error(e)
        return 1
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # usage errors (typer vendors click: these are not click's classes)
        show = getattr(e, "show", None)
        show() if show else sys.stderr.write(f"error: {e.format_message()}\n")
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
