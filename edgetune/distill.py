"""The distill stage: a bigger local teacher answers a prompts file; its answers become SFT rows for a student.

`edgetune distill --teacher MODEL --prompts prompts.jsonl --out train.jsonl`, then `edgetune train --data train.jsonl`.
The teacher runs locally: a .gguf through llama.cpp, or an HF model folder / run directory through transformers.
Each row is appended, flushed and fsynced the moment it is generated, under a key made of its prompt's hash and the
sample index; rerunning the same command skips every key already in --out, so Ctrl-C loses at most the row being
generated. Prompts left out on purpose (reply cut off at --max-tokens, empty, longer than the context) go to
<out>.skipped.jsonl with the reason, so a rerun does not spend time on them again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetune.distill_teacher import load_teacher
from edgetune.errors import DataError, Interrupted
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

PROMPT_SHAPE = 'write each row as {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}'


@dataclass
class Sampling:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    repeat_penalty: float = 1.0
    seed: int = 0
    samples: int = 1  # answers per prompt (each its own row, own seed)


@dataclass
class DistillResult:
    out: Path
    written: int  # rows this call added
    already_done: int  # rows (or skips) found from an earlier call
    skipped: dict  # reason -> count, this call
    seconds: float
    tokens: int


@dataclass
class PromptRow:
    context: list[dict]  # chat messages up to the teacher's turn
    source: str  # file:line
    key: str


def skipped_path(out: Path) -> Path:
    return Path(out).with_suffix(".skipped.jsonl")


# --- prompts -------------------------------------------------------------------------------------------------------

def load_prompts(path: str) -> list[PromptRow]:
    """Rows with `prompt` (text, or a message list) or `messages` (ending with a user turn; a final assistant turn
    is dropped, so an SFT file works as a prompts file). Every bad row is reported up front with file:line."""
    from edgetune.data.formats import RowError, detect_format, normalize
    from edgetune.data.load import read_rows

    bad = []
    records = read_rows(path, problems=bad)
    rows = []
    for pos, rec in records:
        try:
            if "prompt" in rec and "completion" not in rec:
                prompt = rec["prompt"]
                rec = {"messages": prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]}
            fmt = detect_format(rec)
            if fmt is None:
                raise RowError(f"row has neither `prompt` nor `messages` (keys: {', '.join(map(str, rec)) or 'none'})",
                               PROMPT_SHAPE)
            if fmt == "messages" and rec["messages"] and isinstance(rec["messages"][-1], dict) \
                    and rec["messages"][-1].get("role") == "user":
                # normalize() checks a whole conversation; a placeholder reply lets it check the context's turns
                rec = {"messages": [*rec["messages"], {"role": "assistant", "content": "-"}]}
            context = normalize(rec, fmt)[:-1]
        except RowError as e:
            bad.append(f"{path}:{pos}: {e.reason} (fix: {e.fix})")
            continue
        rows.append(PromptRow(context, f"{path}:{pos}", prompt_key(context)))
    bad = [str(b) for b in bad]
    if bad:
        listed = [f"  - {b}" for b in bad[:10]] + ([f"  - ... and {len(bad) - 10} more"] if len(bad) > 10 else [])
        raise DataError("\n".join([f"{path}: {len(bad)} unusable prompt row(s)", *listed]),
                        hint="fix or delete those rows; " + PROMPT_SHAPE, problems=bad)
    if not rows:
        raise DataError(f"{path}: no prompts", hint=PROMPT_SHAPE)
    return rows


def prompt_key(context: list[dict]) -> str:
    text = json.dumps([[m["role"], m["content"]] for m in context], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- the output file -------------------------------------------------------------------------------------------------

def done_keys(out: Path, max_tokens: int, n_ctx: int, sink=null_sink) -> tuple[set[str], dict | None]:
    """Keys of the rows already in `out` and the skip log, and the settings the existing rows were made with.

    A skip for a cut-off answer or a too-long prompt counts only while --max-tokens / --n-ctx are not raised: then it
    is retried. A last line cut off by a crash is removed (its prompt is generated again); any other unreadable line
    refuses."""
    keys, settings = set(), None
    for path in (Path(out), skipped_path(out)):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with path.open("r+b") as f:
                f.truncate(cut)
            sink(Note(f"{path}: removed a last line cut off mid-write; that prompt is generated again", "warning"))
            data = data[:cut]
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                meta = json.loads(line).get("distill") or {}
            except (json.JSONDecodeError, AttributeError):
                raise DataError(f"{path}:{lineno}: not a JSON object, so it cannot be resumed",
                                hint=f"fix or delete that line, or pass a new --out") from None
            retry = (meta.get("skipped") == "truncated" and meta["sampling"]["max_tokens"] < max_tokens
                     or meta.get("skipped") == "too long" and meta.get("n_ctx", 0) < n_ctx)
            if meta.get("key") and not retry:
                keys.add(meta["key"])
            if path == Path(out) and settings is None and meta.get("teacher"):
                settings = {"teacher": meta["teacher"], "sampling": meta.get("sampling", {})}
    return keys, settings


def check_same_settings(out: Path, have: dict | None, teacher: str, sampling: Sampling) -> None:
    """Refuse to mix answers of another teacher or other sampling settings into one file (max_tokens may change)."""
    if have is None:
        return
    now = {k: v for k, v in asdict(sampling).items() if k != "max_tokens"}
    old = {k: v for k, v in have["sampling"].items() if k != "max_tokens"}
    if have["teacher"] != teacher or old != now:
        raise DataError(f"{out} already holds answers of teacher {have['teacher']} with {old}; this call asks "
                        f"{teacher} with {now}",
                        hint="rerun with the same teacher and sampling settings to continue it, or pass a new --out")


def append_row(path: Path, row: dict) -> None:
    """One JSON line, on disk before returning: what was written survives Ctrl-C, a crash or a power cut."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- the stage ---------------------------------------------------------------------------------------------------

def distill(teacher: str, prompts: str, out: Path, sampling: Sampling | None = None, system: str = "",
            keep_system: bool = False, keep_truncated: bool = False, backend: str = "auto", n_ctx: int = 4096,
            limit: int = 0, sink=null_sink) -> DistillResult:
    """Generate the teacher's answers for every prompt (x samples) not yet in `out`; see the module docstring."""
    sampling = sampling or Sampling()
    out = Path(out)
    t0 = time.time()
    if out.resolve() == Path(prompts).resolve():
        raise DataError(f"--out {out} is the prompts file", hint="write the answers to a new file")
    rows = load_prompts(prompts)[: limit or None]
    todo_keys = [(r, f"{r.key}:{k}") for r in rows for k in range(sampling.samples)]
    seen, jobs = set(), []
    for r, key in todo_keys:  # a prompt that appears twice is answered once
        if key not in seen:
            seen.add(key)
            jobs.append((r, key))
    if len(jobs) < len(todo_keys):
        sink(Note(f"{len(todo_keys) - len(jobs)} duplicate prompt(s) in {prompts}: each is answered once", "warning"))
    keys, have = done_keys(out, sampling.max_tokens, n_ctx, sink)
    sink(StageStarted("distill", f"teacher {teacher}"))
    model = load_teacher(teacher, backend, n_ctx, sink)
    check_same_settings(out, have, model.label, sampling)
    pending = [(r, key) for r, key in jobs if key not in keys]
    already = len(jobs) - len(pending)
    sink(Note(f"{len(jobs)} answers to write ({len(rows)} prompts x {sampling.samples}); {already} already in {out}, "
              f"{len(pending)} to generate with {model.label} ({model.backend})"))
    out.parent.mkdir(parents=True, exist_ok=True)
    written, tokens, skipped = 0, 0, {}
    t_gen = time.time()
    settings = asdict(sampling)
    try:
        for i, (r, key) in enumerate(pending, 1):
            seed = (sampling.seed + int(r.key, 16) + int(key.split(":")[1])) % 2 ** 31  # same on a rerun
            ask = ([{"role": "system", "content": system}] if system and r.context[0]["role"] != "system" else []) + r.context
            text, finish, n = model.generate(ask, sampling, seed)
            tokens += n
            text = text.strip()
            reason = ("too long" if finish == "context" else "empty" if not text
                      else "truncated" if finish == "length" and not keep_truncated else "")
            meta = {"key": key, "source": r.source, "teacher": model.label, "backend": model.backend,
                    "sampling": settings, "n_ctx": n_ctx, "seed": seed, "finish_reason": finish, "tokens": n}
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                append_row(skipped_path(out), {"distill": {**meta, "skipped": reason}})
            else:
                context = ask if keep_system else r.context
                append_row(out, {"messages": [*context, {"role": "assistant", "content": text}], "distill": meta})
                written += 1
            rate = i / (time.time() - t_gen)
            sink(Progress("distill", already + i, len(jobs),
                          f"{written} written, {sum(skipped.values())} skipped, {tokens / (time.time() - t_gen):.0f} tok/s, "
                          f"eta {_eta((len(pending) - i) / rate)}"))
    except KeyboardInterrupt:
        raise Interrupted(f"stopped after {written} new row(s); {already + written} answers are in {out}",
                          hint="rerun the same command to continue where it stopped") from None
    finally:
        model.close()
    for reason, count in skipped.items():
        sink(Note(f"{count} prompt(s) skipped ({reason}), listed in {skipped_path(out)}" +
                  {"truncated": ": the answer hit --max-tokens; raise it (a rerun retries them) or pass --keep-truncated",
                   "too long": ": the prompt does not fit the teacher's context; raise --n-ctx",
                   "empty": ": the teacher wrote nothing"}[reason], "warning"))
    result = DistillResult(out, written, already, skipped, time.time() - t0, tokens)
    sink(StageFinished("distill", result.seconds, f"{written} rows written to {out}"))
    return result


def _eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"
