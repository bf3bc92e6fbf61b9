"""The dataset check: format, counts, token stats, problems, and one example rendered with the chat template,
the part in the loss (assistant turns) highlighted and the masked part dimmed."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

MAX_PROBLEMS = 5
MAX_EXAMPLE_CHARS = 1200


def example_text(text: str, spans: list[tuple[int, int]]) -> Text:
    """Render `text`: characters inside `spans` (trained) bold green, the rest (masked) dim."""
    text = text[:MAX_EXAMPLE_CHARS]
    out = Text()
    pos = 0
    for start, end in spans:
        if start >= len(text):
            break
        out.append(text[pos:start], style="dim")
        out.append(text[start:end], style="bold green")
        pos = end
    out.append(text[pos:], style="dim")
    return out


class DataPreview(Static):
    def on_mount(self) -> None:
        self.show_idle()

    def show_idle(self, why: str = "enter a dataset path to check it") -> None:
        self.update(Text(f"Dataset: {why}", style="italic"))

    def show_checking(self, path: str) -> None:
        self.update(Text(f"Checking {path}…", style="italic"))

    def show_error(self, title: str, message: str, hint: str = "") -> None:
        text = Text()
        text.append(f"{title}\n", style="bold red")
        text.append(message + "\n")
        if hint:
            text.append(f"hint: {hint}", style="yellow")
        self.update(text)

    def show_report(self, report, example) -> None:
        if hasattr(report, "method"):
            self.show_method_rows(report)
            return
        if hasattr(report, "n_blocks"):
            self.show_text_report(report)
            return
        text = Text()
        usable = report.n_valid > 0 and 0 < report.masked_fraction < 1
        text.append("Dataset ", style="bold")
        text.append("usable\n" if usable else "NOT usable\n", style="bold green" if usable else "bold red")
        text.append(f"format {report.format}, {report.n_valid} of {report.n_rows} rows valid, "
                    f"{report.n_rejected} rejected\n")
        if report.n_valid:
            text.append(f"tokens min {report.tokens_min} / median {report.tokens_median:g} / max {report.tokens_max}; "
                        f"{1 - report.masked_fraction:.0%} in the loss\n")
        if report.n_truncated:
            text.append(f"{report.n_truncated} truncated to max length {report.max_length}\n", style="yellow")
        for p in report.problems[:MAX_PROBLEMS]:
            text.append(f"• {p}\n", style="yellow")
        if len(report.problems) > MAX_PROBLEMS:
            text.append(f"… and {len(report.problems) - MAX_PROBLEMS} more\n", style="yellow")
        if example:
            text.append("\nExample ", style="bold")
            text.append("trained", style="bold green")
            text.append(" / ")
            text.append("masked", style="dim")
            text.append("\n")
            text.append_text(example_text(*example))
        self.update(text)

    def show_method_rows(self, rows) -> None:
        """dpo/kto/grpo rows: counts, problems and the first row's fields (the reply fields are what is trained)."""
        text = Text()
        text.append("Dataset ", style="bold")
        text.append("usable\n", style="bold green")
        text.append(f"{rows.method} rows: {rows.n_valid} valid, {len(rows.problems)} rejected\n")
        for p in rows.problems[:MAX_PROBLEMS]:
            text.append(f"• {p}\n", style="yellow")
        if rows.first:
            text.append("\nFirst row\n", style="bold")
            for key, value in rows.first.items():
                shown = value[-1]["content"] if isinstance(value, list) and value and isinstance(value[-1], dict) else value
                style = "bold green" if key in ("chosen", "completion", "answer") else "red" if key == "rejected" else "dim"
                text.append(f"{key}: ", style="bold")
                text.append(f"{str(shown)[:300]}\n", style=style)
        self.update(text)

    def show_text_report(self, report) -> None:
        """cpt raw text (edgetune.data.text.TextReport): documents, tokens, blocks and each bad file."""
        text = Text()
        usable = report.n_blocks > 0
        text.append("Text ", style="bold")
        text.append("usable\n" if usable else "NOT usable\n", style="bold green" if usable else "bold red")
        text.append(f"{report.n_documents} documents from {report.n_files} file(s), {report.n_tokens:,} tokens, "
                    f"{report.n_blocks} blocks of up to {report.max_length} tokens; loss on every token\n")
        for p in report.problems[:MAX_PROBLEMS]:
            text.append(f"• {p}\n", style="yellow")
        if len(report.problems) > MAX_PROBLEMS:
            text.append(f"… and {len(report.problems) - MAX_PROBLEMS} more\n", style="yellow")
        self.update(text)
