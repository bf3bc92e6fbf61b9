"""Test data shared by several test modules (importable as `shared_data`: conftest puts tests/ on sys.path;
a `from conftest import` would be ambiguous, as tests/tui has its own conftest)."""
from __future__ import annotations

import json
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "edgetune" / "sample_data"  # the shipped demo data

HELD_OUT_CONVERSATIONS = [  # stand-ins for a run's held-out rows, rendered with the model's own chat template
    [{"role": "user", "content": "What is the boiling point of water at sea level?"},
     {"role": "assistant", "content": "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."}],
    [{"role": "system", "content": "You answer in one sentence."},
     {"role": "user", "content": "Why is the sky blue?"},
     {"role": "assistant", "content": "Air scatters blue sunlight more than red light, so the sky looks blue."}],
]


def held_out_texts(tokenizer) -> list[str]:
    """What export verification compares on, for tests without a run: the conversations above + the fixed texts."""
    from edgetune.export import verify  # not at import: conftest loads this module for every test

    rendered = [tokenizer.apply_chat_template(c, tokenize=False) for c in HELD_OUT_CONVERSATIONS]
    return rendered + verify.heldout_texts(None, tokenizer)


def write_chat_jsonl(folder: Path) -> Path:
    """A small messages-format file that a tiny model can overfit: folder/chat.jsonl."""
    rows = []
    for i in range(24):
        rows.append({"messages": [{"role": "user", "content": f"Say the word number {i % 6}."},
                                  {"role": "assistant", "content": f"Arr! Word {i % 6} it be."}]})
    path = folder / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def write_rows(path: Path, rows: list[dict]) -> Path:
    """rows as a JSONL file at path."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
