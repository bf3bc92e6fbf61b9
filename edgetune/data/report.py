"""The data report (data_report.json): what was read, what was rejected and why, and token statistics.

`validate_data` is the dry run the plan stage shows before training; `build_dataset` runs the same steps and then
refuses data that cannot train (`DataReport.check`).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from edgetune.config import DataConfig
from edgetune.data.load import Problem, load_rows
from edgetune.data.template import chat_format, encode_all
from edgetune.errors import DataError

MAX_LISTED = 10  # problems quoted in an error message; the report file keeps them all


@dataclass
class DataReport:
    source: str
    format: str
    n_rows: int = 0          # rows seen, readable or not
    n_valid: int = 0         # examples that made it into the dataset
    n_rejected: int = 0      # rows skipped, each with a Problem
    n_skipped: int = 0       # valid rows left out by data.max_examples
    problems: list[Problem] = field(default_factory=list)
    max_length: int = 0
    tokens_min: int = 0      # token stats are over the examples as trained (after truncation)
    tokens_median: float = 0
    tokens_p95: int = 0
    tokens_max: int = 0
    tokens_total: int = 0
    masked_fraction: float = 1.0  # fraction of tokens NOT in the loss (1.0 when there is nothing to train on)
    n_truncated: int = 0
    n_sequences: int = 0     # training sequences (more than examples when the template rewrites earlier turns)
    mask_method: str = ""    # how replies were located: turns | markers (edgetune.data.template)
    mask_notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = [p.to_dict() for p in self.problems]
        return d

    def summary(self) -> str:
        """A few lines for people (CLI plan output)."""
        lines = [f"{self.source}: {self.format} format, {self.n_valid} of {self.n_rows} rows usable"
                 + (f" ({self.n_sequences} training sequences)" if self.n_sequences > self.n_valid else "")
                 + (f", {self.n_rejected} rejected" if self.n_rejected else "")
                 + (f", {self.n_skipped} left out by data.max_examples" if self.n_skipped else "")]
        if self.n_valid:
            lines.append(f"tokens per example: min {self.tokens_min}, median {self.tokens_median:g}, "
                         f"p95 {self.tokens_p95}, max {self.tokens_max} (total {self.tokens_total}); "
                         f"{1 - self.masked_fraction:.0%} of tokens in the loss")
        if self.n_truncated:
            lines.append(f"{self.n_truncated} example(s) truncated to max_length={self.max_length}")
        lines += [f"chat template: {note}" for note in self.mask_notes]
        lines += [f"  - {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more (see data_report.json)")
        return "\n".join(lines)

    def check(self) -> None:
        """Raise DataError when the data cannot train: no usable example, or nothing (or everything) in the loss."""
        listed = [str(p) for p in self.problems[:MAX_LISTED]]
        more = [f"... and {len(self.problems) - MAX_LISTED} more"] if len(self.problems) > MAX_LISTED else []
        if self.n_valid == 0:
            head = f"{self.source}: no usable examples ({self.n_rejected} of {self.n_rows} rows rejected)"
            raise DataError("\n".join([head, *(f"  - {p}" for p in listed + more)]),
                            hint="fix the rows listed (each names its line and the fix), or set data.format if "
                                 "auto-detection picked the wrong one",
                            problems=[str(p) for p in self.problems])
        if not 0 < self.masked_fraction < 1:
            what = "no token is" if self.masked_fraction >= 1 else "every token is"
            raise DataError(f"{self.source}: {what} in the loss (masked fraction {self.masked_fraction:.3f}), "
                            "so training would learn nothing useful",
                            hint="check that rows have assistant replies and that the chat template marks them; "
                                 "raise train.max_length if replies are cut off")


def prepare(tokenizer, cfg: DataConfig, max_length: int) -> tuple[DataReport, list[dict]]:
    """Load, normalise and tokenize; rows that end up with no token in the loss become problems.
    Each example is {"input_ids", "mask"} (mask 1 = trained); a conversation may give several (see template.py)."""
    fmt = chat_format(tokenizer)
    loaded = load_rows(cfg)
    examples, lengths, in_loss, n_truncated, n_valid = [], [], 0, 0, 0
    for pos, conv in loaded.conversations:
        try:
            encoded = encode_all(tokenizer, conv)
        except DataError as e:  # a row the template refuses (roles out of order, ...): reported, skipped
            loaded.problems.append(loaded.problem(pos, e.message, e.hint))
            continue
        # Cut to max_length; a sequence left with no reply token is left out (the row is rejected if all are).
        kept = [{"input_ids": ids[:max_length], "mask": mask[:max_length]} for ids, mask in encoded
                if any(mask[:max_length])]
        if not kept:
            loaded.problems.append(loaded.problem(
                pos, f"no assistant token within the first {max_length} tokens (the example has "
                     f"{max(len(ids) for ids, _ in encoded)})", "raise train.max_length or shorten the prompt"))
            continue
        n_valid += 1
        n_truncated += sum(len(ids) > max_length for ids, _ in encoded)
        examples += kept
        lengths += [len(e["input_ids"]) for e in kept]
        in_loss += sum(sum(e["mask"]) for e in kept)
    loaded.problems.sort(key=lambda p: p.line or 0)
    report = DataReport(source=loaded.source, format=loaded.format, n_rows=loaded.n_rows, n_valid=n_valid,
                        n_rejected=len(loaded.problems), n_skipped=loaded.n_skipped, problems=loaded.problems,
                        max_length=max_length, n_truncated=n_truncated, n_sequences=len(examples),
                        mask_method=fmt.method, mask_notes=list(fmt.notes))
    if lengths:
        ordered = sorted(lengths)
        report.tokens_min, report.tokens_max, report.tokens_total = ordered[0], ordered[-1], sum(ordered)
        report.tokens_median = statistics.median(ordered)
        report.tokens_p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
        report.masked_fraction = 1 - in_loss / report.tokens_total
    return report, examples


def validate_data(tokenizer, cfg: DataConfig, max_length: int) -> DataReport:
    """The report without building a dataset. Row problems go in the report; file-level ones raise DataError."""
    return prepare(tokenizer, cfg, max_length)[0]
