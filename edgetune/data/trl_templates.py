"""TRL's shipped chat templates (trl/chat_templates/*.jinja): `trl:NAME` overrides, and their *_training.jinja
variants ({% generation %} markers around what the model writes) for templates whose replies cannot be placed by
rendering turn by turn (edgetune.data.turns), such as DeepSeek-R1-distill's pre-filled "<think>\\n"."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from edgetune.errors import DataError


def folder() -> Path:
    import trl

    return Path(trl.__file__).parent / "chat_templates"


def trl_template(name: str) -> str:
    """The text of trl/chat_templates/NAME.jinja (for model.chat_template = "trl:NAME")."""
    path = folder() / f"{name}.jinja"
    if not path.is_file():
        names = sorted(p.stem for p in folder().glob("*.jinja"))
        raise DataError(f"trl:{name}: TRL ships no template of that name",
                        hint=f"use one of: {', '.join('trl:' + n for n in names)}")
    return path.read_text(encoding="utf-8")


def exact_training_variant(tokenizer) -> str | None:
    """TRL's training variant when the tokenizer's template is one TRL ships, byte for byte."""
    try:
        from trl import get_training_chat_template

        return get_training_chat_template(tokenizer)
    except Exception:  # noqa: BLE001 - an unknown template: TRL has no variant for it
        return None


@functools.lru_cache(maxsize=32)
def nearest_training_variant(template: str) -> tuple[str, float] | None:
    """(NAME, similarity) of the TRL template with a NAME_training variant that this one most resembles (a model
    repo's copy with small edits), judged on Jinja word tokens; None when none is 80% alike."""
    import difflib

    words = _words(template)
    best, name = 0.8, None
    for stem, theirs in _bases():
        matcher = difflib.SequenceMatcher(None, words, theirs, autojunk=False)
        # The cheap upper bounds first: a full comparison with every candidate takes seconds.
        if matcher.real_quick_ratio() > best and matcher.quick_ratio() > best and matcher.ratio() > best:
            best, name = matcher.ratio(), stem
    return (name, best) if name else None


def renders_alike(tokenizer, ours: str, theirs: str, conversations: list[list[dict]]) -> bool:
    """Both templates render every prefix of every conversation identically, with and without a generation prompt."""
    for conv in conversations:
        for n in range(1, len(conv) + 1):
            for prompt in (False, True):
                try:
                    a, b = (tokenizer.apply_chat_template(conv[:n], chat_template=t, tokenize=False,
                                                          add_generation_prompt=prompt) for t in (ours, theirs))
                except Exception:  # noqa: BLE001 - either refuses a shape the other renders
                    return False
                if a != b:
                    return False
    return True


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", text)


@functools.lru_cache(maxsize=1)
def _bases() -> list[tuple[str, list[str]]]:
    """(NAME, word tokens) of each TRL template that has a NAME_training variant."""
    return [(p.stem, _words(p.read_text(encoding="utf-8"))) for p in sorted(folder().glob("*.jinja"))
            if (folder() / f"{p.stem}_training.jinja").is_file()]
