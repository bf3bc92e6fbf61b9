"""Shared fixtures: tiny random models for fast unit tests, the embedded SmolLM2 for integration tests.

Everything is built locally; the hub is never contacted (HF_HUB_OFFLINE=1 for the whole session).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import tinymodels  # noqa: E402
from shared_data import SAMPLE, write_chat_jsonl  # noqa: E402,F401  (SAMPLE: for tests that used it from here)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return tinymodels.build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return tinymodels.build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded default converted to an HF checkpoint (cached across runs in EDGETUNE_CACHE)."""
    from edgetune.models import resolve

    return Path(resolve("default").path)


@pytest.fixture
def chat_jsonl(tmp_path) -> Path:
    return write_chat_jsonl(tmp_path)


# Only a missing GPU may skip a test (tests/gpu/, deselected by default). Any other skip fails the session, so a
# broken install (llama.cpp binding, onnxruntime, a fetched asset) can never turn the suite green by skipping.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not report.nodeid.replace("\\", "/").startswith("tests/gpu/"):
        _SKIPPED.append(f"{report.nodeid}: {report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED:
        print(f"\n{len(_SKIPPED)} test(s) skipped outside tests/gpu (only a missing GPU may skip a test):")
        for line in _SKIPPED:
            print(f"  {line}")
        if session.exitstatus == 0:
            session.exitstatus = 1
