"""Raw text for continued pretraining (method `cpt`): read documents, tokenize, pack into max_length blocks.

A corpus is a .txt/.md file (one document), a folder of .txt/.md files (one document each, searched recursively,
in name order), or a .jsonl file with a `text` field per line (one document per line). A file that cannot be read
as text (binary, not UTF-8, empty) is reported with its name and what to do, and skipped; the rest still trains.
Packing: every document is tokenized (the tokenizer's own BOS, if it adds one), ended with EOS, and the stream
is cut into blocks of max_length tokens; the loss covers every token (labels = input_ids).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgetune.data.load import Problem
from edgetune.errors import DataError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CORPUS_SHAPE = "a .txt or .md file, a folder of them, or a .jsonl file with one {\"text\": ...} per line"
MIN_BLOCK = 16  # a trailing block shorter than this is dropped (it teaches little and skews the batch)


@dataclass
class Document:
    source: str  # file, or file:line for .jsonl
    text: str


@dataclass
class TextReport:
    """What `validate --method cpt` prints and `data_report.json` holds for a CPT run."""

    source: str
    format: str = "text"
    n_files: int = 0
    n_documents: int = 0
    n_tokens: int = 0  # after tokenization, EOS included
    n_blocks: int = 0
    max_length: int = 0
    n_dropped_tokens: int = 0  # the trailing piece shorter than MIN_BLOCK
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return len(self.problems)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = [p.to_dict() for p in self.problems]
        return d

    def check(self) -> None:
        if not self.n_documents:
            raise DataError(f"{self.source}: no usable text" + (f" ({self.n_rejected} file(s) skipped)" if self.problems else ""),
                            hint=f"point data.path at {CORPUS_SHAPE}", problems=[str(p) for p in self.problems])
        if not self.n_blocks:
            raise DataError(f"{self.source}: only {self.n_tokens} tokens, fewer than one block of {MIN_BLOCK}",
                            hint="add more text")


def is_text_corpus(path: str) -> bool:
    """True when `path` looks like raw text rather than rows: a .txt/.md file, a folder holding such files, or a
    .jsonl whose first row has `text` and none of the chat/prompt fields."""
    p = Path(path).expanduser()
    if p.is_dir():
        return any(f.suffix.lower() in TEXT_SUFFIXES for f in p.rglob("*") if f.is_file())
    if p.suffix.lower() in TEXT_SUFFIXES:
        return True
    if p.suffix.lower() in JSONL_SUFFIXES and p.is_file():
        with p.open("rb") as fh:
            for raw in fh:
                if raw.strip():
                    try:
                        row = json.loads(raw)
                    except ValueError:
                        return False
                    return isinstance(row, dict) and "text" in row and not {"messages", "prompt", "conversations",
                                                                             "instruction"} & set(row)
    return False


def read_documents(path: str) -> tuple[list[Document], list[Problem], int]:
    """(documents, problems, files read). DataError when `path` itself is missing or of an unsupported kind."""
    if not path:
        raise DataError("no text given (data.path is empty)", hint=f"set data.path (--data) to {CORPUS_SHAPE}")
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no .txt or .md files in this folder", hint=f"set data.path to {CORPUS_SHAPE}")
    elif not p.is_file():
        raise DataError(f"{path}: no such file or folder", hint=f"set data.path to {CORPUS_SHAPE}")
    elif p.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES:
        files = [p]
    else:
        raise DataError(f"{path}: unsupported file type {p.suffix or '(no extension)'!r} for continued pretraining",
                        hint=f"use {CORPUS_SHAPE}")
    docs, problems = [], []
    for f in files:
        text, problem = _read_text(f)
        if problem:
            problems.append(problem)
        elif f.suffix.lower() in JSONL_SUFFIXES:
            docs += _jsonl_documents(f, text, problems)
        else:
            docs.append(Document(str(f), text))
    return docs, problems, len(files)


def _read_text(f: Path) -> tuple[str, Problem | None]:
    name = str(f)
    data = f.read_bytes()
    if not data.strip():
        return "", Problem(name, None, "file is empty", "add text to it or remove it from the folder")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "", Problem(name, None, "file is UTF-16 encoded", "re-save it as UTF-8 (e.g. `iconv -f utf-16 -t utf-8`)")
    if b"\x00" in data[:8192]:
        return "", Problem(name, None, "looks like a binary file, not text",
                           "remove it from the folder, or convert it to plain text (.txt/.md) first")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return "", Problem(name, line, f"not valid UTF-8 (byte 0x{data[e.start]:02x})",
                           "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)")


def _jsonl_documents(f: Path, text: str, problems: list[Problem]) -> list[Document]:
    docs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(str(f), lineno, f"invalid JSON: {e.msg}", 'write one {"text": "..."} per line'))
            continue
        value = row.get("text") if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            what = "no `text` field" if not isinstance(row, dict) or "text" not in row else "`text` is empty or not a string"
            problems.append(Problem(str(f), lineno, what, 'give each line a non-empty string: {"text": "..."}'))
            continue
        docs.append(Document(f"{f}:{lineno}", value))
    return docs


def pack(tokenizer, docs: list[Document], max_length: int, progress=None) -> tuple[list[list[int]], int, int]:
    """(blocks of max_length token ids, total tokens, dropped trailing tokens). Documents are joined with EOS, so a
    block may span a document boundary, as in pretraining. `progress(i, n)` is called every 200 documents."""
    if not docs:
        return [], 0, 0
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for i, d in enumerate(docs, 1):
        stream += tokenizer(d.text, add_special_tokens=True)["input_ids"]
        if eos is not None and (not stream or stream[-1] != eos):
            stream.append(eos)
        if progress and (i % 200 == 0 or i == len(docs)):
            progress(i, len(docs))
    blocks = [stream[i:i + max_length] for i in range(0, len(stream), max_length)]
    dropped = 0
    if blocks and len(blocks[-1]) < MIN_BLOCK:
        dropped = len(blocks.pop())
    return blocks, len(stream), dropped


def load_corpus(tokenizer, path: str, max_length: int, max_documents: int = 0,
                progress=None) -> tuple[list[list[int]], TextReport]:
    """Read, tokenize and pack `path`: (blocks, report). Raises DataError only when nothing usable is left."""
    docs, problems, n_files = read_documents(path)
    if max_documents:
        docs = docs[:max_documents]
    blocks, n_tokens, dropped = pack(tokenizer, docs, max_length, progress)
    report = TextReport(str(path), "text", n_files, len(docs), n_tokens, len(blocks), max_length, dropped, problems)
    return blocks, report
