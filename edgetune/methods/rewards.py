"""Verifiable reward functions for GRPO, selected by name (or `module:function`) with an optional weight.

A reward function receives the batch as TRL passes it: `completions` (list of chat-message lists or strings), plus
every dataset column as a keyword (here `answer`, `prompt`), and returns one float per completion (None = skip).
User rewards follow the same signature:

    def my_reward(completions: list, answer: list[str], **kwargs) -> list[float]: ...

and are named `--reward my_module:my_reward=0.5`. A reward that raises is reported with the completion that broke
it; `method.on_reward_error` decides whether the run scores it 0 and goes on, or stops cleanly.
"""
from __future__ import annotations

import importlib
import json
import math
import re
from dataclasses import dataclass
from typing import Callable

from edgetune.errors import ConfigError, TrainError


def completion_text(c) -> str:
    if isinstance(c, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in c if isinstance(m, dict))
    return str(c)


def extract(text: str) -> str:
    from edgetune.evaluate import extract_answer

    return extract_answer(text)


def norm(text: str) -> str:
    from edgetune.evaluate import normalize

    return normalize(text)


def answer_match(completions, answer, **_) -> list[float]:
    """1 when the answer extracted from the completion (<answer> tags, JSON `answer`, `#### x`) equals the reference."""
    return [float(norm(extract(completion_text(c))) == norm(extract(a))) for c, a in zip(completions, answer)]


_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:[eE]-?\d+)?")


def _last_number(text: str) -> float | None:
    found = _NUMBER.findall(text.replace(",", ""))
    try:
        return float(found[-1]) if found else None
    except ValueError:
        return None


def make_numeric_match(tolerance: float):
    def numeric_match(completions, answer, **_) -> list[float]:
        """1 when the last number of the extracted answer equals the reference within a relative tolerance."""
        out = []
        for c, a in zip(completions, answer):
            got, want = _last_number(extract(completion_text(c))), _last_number(str(a))
            out.append(float(got is not None and want is not None and math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance)))
        return out
    return numeric_match


def make_regex_format(pattern: str):
    rx = re.compile(pattern, re.MULTILINE)

    def regex_format(completions, **_) -> list[float]:
        """1 when the completion matches the configured pattern (format credit)."""
        return [float(bool(rx.search(completion_text(c)))) for c in completions]
    return regex_format


def json_valid(completions, **_) -> list[float]:
    """1 when the completion (or its fenced code block) parses as JSON."""
    out = []
    for c in completions:
        text = completion_text(c).strip()
        m = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
        try:
            json.loads(m.group(1) if m else text)
            out.append(1.0)
        except (ValueError, TypeError):
            out.append(0.0)
    return out


def length_penalty(completions, **_) -> list[float]:
    """Up to -1 for long completions: -len/512 characters, so short answers are preferred when all else is equal."""
    return [-min(1.0, len(completion_text(c)) / 512) for c in completions]


def repetition_penalty(completions, **_) -> list[float]:
    """Down to -1 for completions that repeat themselves: minus the share of words (lower-cased) that repeat an
    earlier word. Pair it with a format reward, which a policy otherwise games by looping ("Arr! Arr! Arr!")."""
    out = []
    for c in completions:
        words = completion_text(c).lower().split()
        out.append(-(1 - len(set(words)) / len(words)) if words else 0.0)
    return out


@dataclass
class Reward:
    name: str
    func: Callable
    weight: float


def build(specs: list[str], cfg) -> list[Reward]:
    """Parse NAME[=WEIGHT] specs into reward functions; unknown names list what exists."""
    library = {"answer_match": answer_match, "numeric_match": make_numeric_match(cfg.method.numeric_tolerance),
               "regex_format": make_regex_format(cfg.method.reward_pattern), "json_valid": json_valid,
               "length_penalty": length_penalty, "repetition_penalty": repetition_penalty}
    rewards, problems = [], []
    for spec in specs:
        name, _, weight = spec.partition("=")
        name = name.strip()
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            problems.append(f"reward {spec!r}: weight {weight!r} is not a number; write NAME=0.5")
            continue
        if name in library:
            rewards.append(Reward(name, library[name], w))
        elif ":" in name:
            module, _, attr = name.partition(":")
            try:
                func = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                problems.append(f"reward {name!r}: cannot import ({e}); the module must be importable from here")
                continue
            rewards.append(Reward(name, func, w))
        else:
            problems.append(f"unknown reward {name!r}; use one of: {', '.join(library)}, or module:function")
    if problems:
        raise ConfigError(problems, hint="fix `method.rewards` / --reward")
    return rewards


def guarded(reward: Reward, on_error: str, sink) -> Callable:
    """Wrap a reward so an exception names the reward and the sample, then scores 0 (skip) or stops the run."""
    from edgetune.events import Note

    def call(prompts=None, completions=None, **kwargs):
        try:
            values = reward.func(prompts=prompts, completions=completions, **kwargs)
            return [None if v is None else float(v) for v in values]
        except Exception as e:  # noqa: BLE001 - a user's reward must never crash the run without context
            sample = completion_text(completions[0])[:120] if completions else ""
            where = f"reward {reward.name!r} raised {type(e).__name__}: {e} on a batch starting with completion {sample!r}"
            if on_error == "stop":
                raise TrainError(where, hint="fix the reward function, or set method.on_reward_error = \"skip\"") from None
            sink(Note(f"{where}; scored 0 (method.on_reward_error = skip)", "warning"))
            return [0.0] * len(completions)

    call.__name__ = reward.name.replace(":", "_").replace(".", "_")
    return call
