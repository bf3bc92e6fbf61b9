"""Export: pick GGUF types (or auto with a KLD budget) and ONNX variants, run the verified exports in a worker, show
progress and the verification table that report.json holds (GGUF files and ONNX folders, the same columns)."""
from __future__ import annotations

import json
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, Label, ProgressBar, RichLog, SelectionList, Static
from textual.worker import Worker, WorkerState

from edgetune import runs
from edgetune.events import Note, StageFinished, StageStarted
from edgetune.export.types import GGUF_TYPES, ONNX_VARIANTS
from edgetune.tui.messages import CoreEvent, ErrorRaised, ExportFinished, ExportProgressed, PostingSink
from edgetune.tui.screens.run_screen import RunScreen
from edgetune.tui.widgets.verify_table import VerifyTable

DEFAULT_TYPES = ("q4_k_m",)  # as edgetune.config.ExportConfig.gguf
ONNX_PREFIX = "onnx:"  # selection values of ONNX variants: onnx:int4


def split_choices(values: list[str]) -> tuple[list[str], list[str]]:
    """Selected values -> (GGUF types, ONNX variants)."""
    return ([v for v in values if not v.startswith(ONNX_PREFIX)],
            [v[len(ONNX_PREFIX):] for v in values if v.startswith(ONNX_PREFIX)])


def table_rows(gguf: list[dict], onnx: list[dict]) -> list[dict]:
    """GGUF results, then verified ONNX results labelled "onnx <variant>" (the table shows one type column)."""
    return list(gguf) + [{**r, "type": f"onnx {r['type']}"} for r in onnx if "top1" in r]


class ExportScreen(RunScreen):
    BINDINGS = [
        Binding("ctrl+e", "export", "Export"),
        Binding("c", "app.switch_mode('chat')", "Chat"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.worker: Worker | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("No run: train one first, or open one in Runs (F6).", id="export-run")
        with Horizontal(id="export-choices"):
            yield SelectionList[str](("auto (smallest under the KLD budget)", "auto"),
                                     *[(q.upper(), q, q in DEFAULT_TYPES) for q in GGUF_TYPES],
                                     *[(f"ONNX {v.upper()}", ONNX_PREFIX + v) for v in ONNX_VARIANTS],
                                     id="types", compact=True)
            with Vertical(id="export-side"):
                yield Label("KLD budget (auto)")
                yield Input("0.1", type="number", id="max_kld", compact=True)
                yield Button("Export", id="export", variant="primary", compact=True)
                yield Label("", id="export-stage")
                yield ProgressBar(total=1, id="export-progress", show_eta=False)  # determinate: no idle animation
        yield RichLog(id="export-log", max_lines=300, wrap=True)
        yield VerifyTable(id="verify")
        yield Footer()

    def open_run(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        ready = (self.run_dir / runs.ADAPTER).is_dir() or (self.run_dir / runs.MERGED).is_dir()
        self.query_one("#export-run", Static).update(
            f"Run {self.run_dir}" + ("" if ready else " — not trained yet (no adapter/)"))
        self.show_report()

    def show_report(self) -> None:
        """The verification table of the last export of this run, if any (report.json)."""
        path = self.run_dir / runs.REPORT if self.run_dir else None
        if path is None or not path.is_file():
            return
        report = json.loads(path.read_text(encoding="utf-8"))
        gguf, onnx = report.get("export") or {}, report.get("onnx") or {}
        self.query_one(VerifyTable).show(table_rows(gguf.get("files") or [], onnx.get("variants") or []))

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    @on(Button.Pressed, "#export")
    def action_export(self) -> None:
        if self.run_dir is None:
            self.post_message(ErrorRaised("No run", "there is no run to export", "train one, or open one in Runs (F6)"))
            return
        if self.running:
            return
        types = list(self.query_one("#types", SelectionList).selected)
        if not types:
            self.post_message(ErrorRaised("Nothing to export", "no GGUF type or ONNX variant is selected",
                                          "tick at least one type (space), or auto"))
            return
        try:
            max_kld = float(self.query_one("#max_kld", Input).value)
        except ValueError:
            self.post_message(ErrorRaised("Invalid KLD budget", "the KLD budget is not a number", "e.g. 0.1"))
            return
        self.query_one("#export", Button).disabled = True
        self.query_one("#export-log", RichLog).write(f"exporting {', '.join(types)} from {self.run_dir}")
        self.worker = self.run_export(self.run_dir, types, max_kld)

    @work(thread=True, exclusive=True, group="export")
    def run_export(self, run_dir: Path, types: list[str], max_kld: float) -> None:
        from edgetune.tui.services import heavy_imports

        heavy_imports()
        from edgetune.export.gguf_export import ExportResult, export_gguf
        from edgetune.export.onnx_export import export_onnx

        gguf_types, onnx_variants = split_choices(types)
        try:
            result = export_gguf(run_dir, gguf_types, PostingSink(self), max_kld=max_kld) if gguf_types else \
                ExportResult(files=[], results=[])
            if onnx_variants:
                onnx = export_onnx(run_dir, onnx_variants, PostingSink(self))
                result.files += [Path(r["path"]) for r in onnx]
                result.results = table_rows(result.results, onnx)
            self.post_message(ExportFinished(run_dir, result))
        except Exception as e:
            self.post_message(ErrorRaised.from_exception(e))
            self.post_message(ExportFinished(run_dir, None))

    def on_export_progressed(self, message: ExportProgressed) -> None:
        bar = self.query_one(ProgressBar)
        bar.update(total=message.total, progress=message.done)
        self.query_one("#export-stage", Label).update(f"{message.stage} {message.detail}"[:40])

    def on_core_event(self, message: CoreEvent) -> None:
        e, log = message.event, self.query_one("#export-log", RichLog)
        if isinstance(e, Note):
            log.write(("⚠ " if e.level == "warning" else "") + e.text)
        elif isinstance(e, StageStarted):
            self.query_one("#export-stage", Label).update(e.stage)
            log.write(f"▶ {e.stage} {e.detail}".rstrip())
        elif isinstance(e, StageFinished):
            log.write(f"✓ {e.stage} in {e.seconds:.1f} s {e.detail}".rstrip())

    def on_export_finished(self, message: ExportFinished) -> None:
        self.query_one("#export", Button).disabled = False
        if message.result is None:
            self.query_one("#export-stage", Label).update("failed")
            self.show_report()  # the report is written before a gate fails: show its numbers
            return
        self.query_one("#export-stage", Label).update("done")
        self.query_one(VerifyTable).show(message.result.results)
        failing = [r for r in message.result.results if r.get("failures")]
        note = f"; {len(failing)} file(s) with findings (see table)" if failing else ""
        self.notify(f"{len(message.result.files)} file(s)/folder(s) in {message.run_dir}{note}. Press c to chat.",
                    title="Export finished")
