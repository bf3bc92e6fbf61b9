"""`edgetune validate`: read a dataset the way training will and report on it, without loading model weights."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from edgetune.config import DataConfig, RunConfig, validate as validate_config
from edgetune.errors import DataError


def run_validate(data: str, model: str, method: str, data_format: str, max_length: int, chat_template: str,
                 sink, console: Console | None = None, allow_skips: bool = False, gguf: list[str] | None = None,
                 onnx: list[str] | None = None) -> bool:
    """Print whether the model can be exported, then format, counts, token stats, masked fraction, the chat
    template's handling and all problems.

    True when the data can train, the model can be exported as asked (`gguf`, `onnx`: the types the run will
    export; default export.gguf's default) and (unless `allow_skips`) no row had to be rejected: a validator that
    passes files with broken rows hides them, while training itself skips such rows with a warning.
    """
    from edgetune import models
    from edgetune.data import ensure_chat_template, validate_data
    from edgetune.engines.hf import HFEngine

    console = console or Console()
    cfg = RunConfig()
    cfg.model.ref, cfg.model.chat_template, cfg.method.name = model, chat_template, method
    cfg.data = DataConfig(path=data, format=data_format)
    validate_config(cfg, "command line")
    resolved = models.resolve(model, trust_remote_code=False, sink=sink)
    exportable = check_exports(resolved, cfg.export.gguf if gguf is None else gguf, onnx or [], console)
    if method not in ("sft", "cpt"):
        return validate_method_rows(data, method, console, allow_skips) and exportable
    tokenizer = HFEngine().load_tokenizer(resolved, cfg)
    if method == "cpt":
        return validate_text(tokenizer, data, max_length, console, allow_skips) and exportable
    ensure_chat_template(tokenizer, chat_template)
    report = validate_data(tokenizer, cfg.data, max_length)
    console.print(f"[bold]{escape(report.source)}[/]")
    console.print(f"  format          {report.format}")
    console.print(f"  rows            {report.n_rows}")
    console.print(f"  valid examples  {report.n_valid}"
                  + (f" ({report.n_sequences} training sequences)" if report.n_sequences > report.n_valid else ""))
    how = {"turns": "found by rendering the conversation turn by turn",
           "markers": "found by the template's {% generation %} markers"}.get(report.mask_method, report.mask_method)
    console.print(f"  loss mask       each reply and its end-of-turn token, {escape(how)}", soft_wrap=True)
    for note in report.mask_notes:
        console.print(f"  [yellow]chat template[/]   {escape(note)}", soft_wrap=True)
    console.print(f"  rejected        {report.n_rejected}")
    if report.n_valid:
        console.print(f"  tokens          min {report.tokens_min}, median {report.tokens_median:g}, p95 {report.tokens_p95}, "
                      f"max {report.tokens_max}, total {report.tokens_total} (after the chat template)")
        console.print(f"  masked fraction {report.masked_fraction:.3f} (share of tokens outside the loss)")
    if report.n_truncated:
        console.print(f"  [yellow]{report.n_truncated} example(s) longer than max_length={max_length} get truncated[/]")
    if report.problems:
        console.print(f"[bold]problems ({len(report.problems)})[/]")
        for p in report.problems:
            console.print(f"  - {escape(str(p))}", soft_wrap=True)
    try:
        report.check()
    except DataError as e:
        from edgetune.console import render_error

        render_error(e)
        return False
    if report.problems and not allow_skips:
        console.print(f"[yellow]usable, but training would skip {report.n_rejected} row(s)[/]: fix them, or pass "
                      "--allow-skips to accept")
        return False
    console.print("[green]usable[/]" + (" (rows with problems are skipped)" if report.problems else ""))
    return exportable


def check_exports(resolved, gguf: list[str], onnx: list[str], console: Console) -> bool:
    """Print whether the model can be exported to GGUF and ONNX; False when an export asked for is impossible."""
    from edgetune import preflight
    from edgetune.errors import ConfigError

    support = preflight.export_support(preflight.model_config(resolved.path, resolved.revision))
    console.print(f"[bold]{escape(resolved.ref)}[/]: {escape(support.describe())}", soft_wrap=True)
    try:
        preflight.require_exports(gguf, onnx, support)
    except ConfigError as e:
        from edgetune.console import render_error

        render_error(e)
        return False
    return True


def validate_method_rows(data: str, method: str, console: Console, allow_skips: bool) -> bool:
    """dpo / kto / grpo rows: shape, types, empty or identical pairs; every problem with file:line and the fix."""
    from edgetune.data.preference import load_method_rows

    try:
        rows, problems = load_method_rows(data, method)
    except DataError as e:
        from edgetune.console import render_error

        render_error(e)
        return False
    console.print(f"[bold]{escape(data)}[/]")
    console.print(f"  format          {method} rows")
    console.print(f"  valid examples  {len(rows)}")
    console.print(f"  rejected        {len(problems)}")
    for p in problems:
        console.print(f"  - {escape(str(p))}", soft_wrap=True)
    if problems and not allow_skips:
        console.print(f"[yellow]usable, but training would skip {len(problems)} row(s)[/]: fix them, or pass --allow-skips")
        return False
    console.print("[green]usable[/]")
    return True


def validate_text(tokenizer, data: str, max_length: int, console: Console, allow_skips: bool) -> bool:
    """cpt raw text: files, documents, tokens, packed blocks; each unreadable file (binary, not UTF-8, empty) with
    its name and what to do."""
    from edgetune.console import render_error
    from edgetune.data.text import load_corpus

    try:
        _, report = load_corpus(tokenizer, data, max_length)
        console.print(f"[bold]{escape(data)}[/]")
        console.print("  format          raw text (continued pretraining: loss on every token)")
        console.print(f"  files           {report.n_files}")
        console.print(f"  documents       {report.n_documents}")
        console.print(f"  tokens          {report.n_tokens:,} (EOS after each document)")
        console.print(f"  blocks          {report.n_blocks} of up to {max_length} tokens"
                      + (f" ({report.n_dropped_tokens} trailing tokens dropped)" if report.n_dropped_tokens else ""))
        console.print(f"  bad files       {report.n_rejected}")
        for p in report.problems:
            console.print(f"  - {escape(str(p))}", soft_wrap=True)
        report.check()
    except DataError as e:
        render_error(e)
        return False
    if report.problems and not allow_skips:
        console.print(f"[yellow]usable, but training would skip {report.n_rejected} file(s)[/]: fix them, or pass "
                      "--allow-skips to accept")
        return False
    console.print("[green]usable[/]" + (" (bad files are skipped)" if report.problems else ""))
    return True
