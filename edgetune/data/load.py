"""Read rows from a file or hub dataset, keeping where each came from, and turn them into conversations.

File-level failures (missing, empty, binary, not UTF-8, wrong shape) raise DataError naming the file.
Row-level failures become `Problem`s (file:line, reason, fix) and the row is skipped, so one bad row never hides
the rest of the report.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetune.config import DataConfig
from edgetune.data.formats import ANY_SHAPE, FORMATS, RowError, detect_format, json_type, normalize
from edgetune.errors import DataError

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SUPPORTED = ".jsonl, .json, .csv, .parquet or a hub dataset id"
# Keys under which a .json file commonly holds its list of rows.
LIST_KEYS = ("data", "train", "rows", "examples", "records", "items")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Problem:
    """One row that was skipped. `unit` says what `line` counts: a physical `line` or a 1-based `row` index."""

    source: str
    line: int | None
    reason: str
    fix: str
    unit: str = "line"

    def __str__(self) -> str:
        if self.line is None:
            where = self.source
        elif self.unit == "line":
            where = f"{self.source}:{self.line}"
        else:
            where = f"{self.source}: row {self.line}"
        return f"{where}: {self.reason} (fix: {self.fix})"

    def to_dict(self) -> dict:
        return {**asdict(self), "text": str(self)}


def read_rows(path: str, split: str = "train", problems: list[Problem] | None = None) -> list[tuple[int, dict]]:
    """(position, row) pairs: the physical line for .jsonl/.csv, the 1-based row index for .json/.parquet/hub.

    Rows that cannot be read (bad JSON line, not an object) are appended to `problems` when a list is given;
    otherwise the first one raises DataError. File-level failures always raise DataError.
    """
    records, bad, _unit = _read_records(path, split)
    if bad and problems is None:
        raise DataError(str(bad[0]), hint=bad[0].fix, problems=[str(p) for p in bad])
    if problems is not None:
        problems.extend(bad)
    return records


@dataclass
class Loaded:
    """What load_rows found: conversations with their positions, skipped rows, and counts."""

    source: str
    unit: str  # what positions count: "line" or "row"
    format: str
    n_rows: int
    conversations: list[tuple[int, list[dict]]]
    problems: list[Problem]
    n_skipped: int = 0  # valid rows left out by data.max_examples

    def problem(self, pos: int, reason: str, fix: str) -> Problem:
        return Problem(self.source, pos, reason, fix, self.unit)


def load_rows(cfg: DataConfig) -> Loaded:
    """Read, detect and normalise every row; keep each conversation's position for later row problems."""
    records, bad, unit = _read_records(cfg.path, cfg.split)
    forced = cfg.format in FORMATS
    fmt = cfg.format if forced else _dominant_format(records)
    out = Loaded(str(cfg.path), unit, fmt or "unknown", len(records) + len(bad), [], list(bad))
    for pos, row in records:
        row_fmt = detect_format(row)
        if not forced and row_fmt != fmt:
            out.problems.append(out.problem(pos, *_format_mismatch(row, row_fmt, fmt)))
            continue
        try:
            conv = normalize(row, fmt, cfg.system_prompt)
        except RowError as e:
            fix = e.fix
            if forced and row_fmt not in (None, fmt):
                fix += f" (this row looks like {row_fmt}; set data.format = \"auto\" or \"{row_fmt}\")"
            out.problems.append(out.problem(pos, e.reason, fix))
            continue
        out.conversations.append((pos, conv))
    out.problems.sort(key=lambda p: p.line or 0)
    if cfg.max_examples and len(out.conversations) > cfg.max_examples:
        out.n_skipped = len(out.conversations) - cfg.max_examples
        out.conversations = out.conversations[: cfg.max_examples]
    return out


def load_conversations(cfg: DataConfig) -> tuple[list[list[dict]], list[Problem], str]:
    """Conversations in chat-message form, the rows that were skipped, and the detected format."""
    loaded = load_rows(cfg)
    return [conv for _, conv in loaded.conversations], loaded.problems, loaded.format


def _dominant_format(records: list[tuple[int, dict]]) -> str | None:
    """The format most rows use (ties go to the earlier entry of FORMATS); None when no row fits any."""
    counts = Counter(f for _, row in records if (f := detect_format(row)))
    if not counts:
        return None
    return max(FORMATS, key=lambda f: (counts.get(f, 0), -FORMATS.index(f)))


def _format_mismatch(row: dict, row_fmt: str | None, fmt: str | None) -> tuple[str, str]:
    keys = ", ".join(sorted(map(str, row))) or "none"
    if row_fmt is None:
        return f"row fits no known format (keys: {keys})", ANY_SHAPE
    return (f"row is in {row_fmt} format but most rows of this file are {fmt}",
            f"rewrite it in the {fmt} shape, or put {row_fmt} rows in a separate file")


# --- reading files ----------------------------------------------------------------------------------------------

def _read_records(path: str, split: str) -> tuple[list[tuple[int, dict]], list[Problem], str]:
    """Rows, unreadable-row problems, and the unit of positions ("line" or "row")."""
    if not path:
        raise DataError("no dataset given (data.path is empty)", hint=f"set data.path (--data) to a {SUPPORTED}")
    p = Path(path).expanduser()
    if p.is_dir():
        return _from_dataset(_load_dataset_dir(p, split), str(path))
    if not p.exists():
        if p.suffix.lower() in SUFFIXES or not HUB_ID.match(str(path)):
            raise DataError(f"{path}: no such file", hint=f"set data.path to an existing {SUPPORTED}")
        return _from_dataset(_load_hub(str(path), split), str(path))
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {p.suffix or '(no extension)'!r}",
                        hint=f"convert it to {SUPPORTED} (rows as JSON objects)")
    if kind == "parquet":
        return _from_parquet(p, str(path))
    text = _read_text(p, str(path))
    if kind == "jsonl":
        return _from_jsonl(text, str(path))
    if kind == "json":
        return _from_json(text, str(path), split)
    return _from_csv(text, str(path))


def _read_text(p: Path, name: str) -> str:
    data = p.read_bytes()
    if not data.strip():
        raise DataError(f"{name}: file is empty", hint="add one training example per row, e.g. " + ANY_SHAPE)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{name}: file is UTF-16 encoded", hint="re-save it as UTF-8 (e.g. `iconv -f utf-16 -t utf-8`)")
    if data.startswith(b"\x1f\x8b"):
        raise DataError(f"{name}: file is gzip-compressed", hint="decompress it (gunzip) and set data.path to the result")
    if b"\x00" in data[:8192]:
        raise DataError(f"{name}: looks like a binary file, not text",
                        hint=f"point data.path at a text {SUPPORTED} (a .parquet file needs the .parquet extension)")
    try:
        return data.decode("utf-8-sig")  # a UTF-8 BOM (Excel, Notepad) is fine
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise DataError(f"{name}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column})",
                        hint="re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)") from None


def _from_jsonl(text: str, name: str) -> tuple[list[tuple[int, dict]], list[Problem], str]:
    records, problems = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(name, lineno, f"invalid JSON: {e.msg} (column {e.colno})", _jsonl_fix(line)))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(name, lineno, f"line is a JSON {json_type(row)}, not an object", ANY_SHAPE))
            continue
        records.append((lineno, row))
    if not records and problems:
        # A whole JSON document saved as .jsonl: read it as .json instead of failing every line.
        try:
            json.loads(text)
        except json.JSONDecodeError:
            pass
        else:
            return _from_json(text, name, "train")
    return records, problems, "line"


def _jsonl_fix(line: str) -> str:
    stripped = line.strip()
    if stripped in ("[", "]", "{", "}") or stripped.endswith(","):
        return "write one complete JSON object per line (JSON Lines), or save a JSON list as .json"
    if stripped.startswith("{") and not stripped.endswith("}"):
        return "the object looks cut off; complete it or delete the line (each line must be one whole JSON object)"
    return "make the line one valid JSON object (check quotes, commas and brackets)"


def _from_json(text: str, name: str, split: str) -> tuple[list[tuple[int, dict]], list[Problem], str]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})",
                        hint="fix the JSON syntax there; if the file was cut off, complete or re-export it") from None
    if isinstance(doc, dict):
        doc = _rows_in_object(doc, name, split)
    if not isinstance(doc, list):
        line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        raise DataError(f"{name}:{line}: top level is a JSON {json_type(doc)}; expected a list of rows",
                        hint='write [{"messages": [...]}, ...] or {"data": [...]}')
    if doc and not any(isinstance(r, dict) for r in doc):
        raise DataError(f"{name}: row 1 is a JSON {json_type(doc[0])}, and so is every other row: the top-level "
                        "list must hold row objects", hint="make each element one object, e.g. " + ANY_SHAPE)
    records, problems = [], []
    for i, row in enumerate(doc, 1):
        if isinstance(row, dict):
            records.append((i, row))
        else:
            problems.append(Problem(name, i, f"row is a JSON {json_type(row)}, not an object", ANY_SHAPE, "row"))
    return records, problems, "row"


def _rows_in_object(doc: dict, name: str, split: str) -> list:
    if detect_format(doc):
        return [doc]  # the file is a single example
    lists = {k: v for k, v in doc.items() if isinstance(v, list)}
    for key in (split, *LIST_KEYS):
        if key in lists:
            return lists[key]
    if len(lists) == 1:
        return next(iter(lists.values()))
    found = ", ".join(lists) if lists else "none"
    raise DataError(f"{name}: top level is an object; expected it to hold one list of rows (lists found: {found})",
                    hint='put the rows under "data" (or "train"), or make the file a JSON list of rows')


def _from_csv(text: str, name: str) -> tuple[list[tuple[int, dict]], list[Problem], str]:
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{name}:1: cannot read the CSV header ({e})", hint="save the file as comma-separated CSV") from None
    header = [h.strip() for h in header]
    records, problems = [], []
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(Problem(name, start, f"unreadable CSV record ({e})", "close the quoted field"))
            break
        if any(c.strip() for c in cells):
            if len(cells) != len(header):
                problems.append(Problem(name, start, f"{len(cells)} cells but the header has {len(header)} columns",
                                        "quote cells that contain commas or newlines"))
            else:
                records.append((start, {k: _csv_cell(k, v) for k, v in zip(header, cells)}))
        start = reader.line_num + 1
    if not records and not problems:
        raise DataError(f"{name}: CSV has a header but no rows", hint="add one example per row below the header")
    return records, problems, "line"


def _csv_cell(key: str, value: str) -> Any:
    # messages / conversations columns hold JSON text in a CSV; prompt/completion may too (conversational form).
    if key in ("messages", "conversations", "prompt", "completion") and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _from_parquet(p: Path, name: str) -> tuple[list[tuple[int, dict]], list[Problem], str]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{name}: cannot read Parquet ({e})", hint="re-export the file, or convert it to .jsonl") from None
    if not rows:
        raise DataError(f"{name}: Parquet file has no rows", hint="add examples to it")
    return [(i, r) for i, r in enumerate(rows, 1)], [], "row"


# --- hub datasets and saved dataset folders --------------------------------------------------------------------

def _load_hub(dataset_id: str, split: str):
    from datasets import load_dataset

    try:
        return load_dataset(dataset_id, split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataError(f"{dataset_id}: {e}", hint="set data.split (--split) to one of the splits listed") from None
        raise DataError(f"{dataset_id}: cannot load hub dataset ({e})", hint="check the dataset id") from None
    except Exception as e:  # offline, not found, gated: datasets raises many types
        raise DataError(f"{dataset_id}: cannot load hub dataset ({type(e).__name__}: {e})",
                        hint="check the id and your connection; offline, download it first "
                             "(datasets.load_dataset(...).save_to_disk(DIR)) and set data.path to DIR or a local file") from None


def _load_dataset_dir(p: Path, split: str):
    import datasets

    try:
        if (p / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(p))
            if split not in dd:
                raise DataError(f"{p}: no split {split!r} (has: {', '.join(dd)})", hint="set data.split (--split)")
            return dd[split]
        if (p / "state.json").is_file():
            return datasets.load_from_disk(str(p))
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{p}: cannot load saved dataset ({e})", hint="re-save it with Dataset.save_to_disk") from None
    return _load_hub(str(p), split)  # a folder of data files: the hub loader reads it the same way


def _from_dataset(ds, name: str) -> tuple[list[tuple[int, dict]], list[Problem], str]:
    if len(ds) == 0:
        raise DataError(f"{name}: dataset split is empty", hint="set data.split to a split that has rows")
    return [(i, row) for i, row in enumerate(ds, 1)], [], "row"

