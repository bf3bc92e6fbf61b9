"""The forgetting check: does the tuned model still do what the base model could?

A small general-ability probe ships with edgetune (edgetune/sample_data/general_probe.jsonl: short factual,
arithmetic and instruction-following prompts, each with a checker). `edgetune eval RUN` scores the base model and
the tuned one (merged, else base+adapter) on it with greedy replies, records both in report.json/report.md, and
warns when the tuned model scores more than `eval.max_probe_drop` points (of 100) below the base. A rise is fine:
this only looks for lost ability, not for the run's own task.

Checkers (field `check`, against field `answer`), applied to the reply with surrounding whitespace stripped:
    contains  the answer occurs in the reply, ignoring case
    exact     the reply equals the answer, ignoring case, punctuation and articles (edgetune.evaluate.normalize)
    regex     the answer is a regular expression searched in the reply, ignoring case unless it says (?-i:...)
    number    the last number in the reply's first sentence equals the answer ("Half of 50 is 25." -> 25)
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgetune.errors import DataError
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

CHECKS = ("contains", "exact", "regex", "number")
KINDS = ("factual", "arithmetic", "instruction")
PROBE_TOKENS = 32  # answers are a word or a sentence; a model that rambles still gets judged on its start
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class ProbeItem:
    id: str
    kind: str
    prompt: str
    check: str
    answer: str


def probe_path() -> Path:
    return Path(str(resources.files("edgetune").joinpath("sample_data/general_probe.jsonl")))


def load_probe(path: Path | None = None) -> list[ProbeItem]:
    """The probe items; DataError naming file:line and the field for any malformed one."""
    path = Path(path or probe_path())
    items, problems = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = ProbeItem(**{k: row[k] for k in ("id", "kind", "prompt", "check", "answer")})
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"{path}:{lineno}: {type(e).__name__}: {e}")
            continue
        if item.check not in CHECKS:
            problems.append(f"{path}:{lineno}: check {item.check!r}; use one of {', '.join(CHECKS)}")
        elif item.check == "regex":
            try:
                re.compile(item.answer)
            except re.error as e:
                problems.append(f"{path}:{lineno}: answer is not a valid regex ({e})")
        items.append(item)
    if problems or not items:
        raise DataError(f"{path}: {len(problems)} malformed probe item(s)" if problems else f"{path}: no probe items",
                        hint='write one {"id", "kind", "prompt", "check", "answer"} object per line',
                        problems=problems)
    return items


def passes(reply: str, item: ProbeItem) -> bool:
    from edgetune.evaluate import normalize

    reply = reply.strip()
    if item.check == "contains":
        return item.answer.lower() in reply.lower()
    if item.check == "exact":
        return normalize(reply) == normalize(item.answer)
    if item.check == "regex":
        return re.search(item.answer, reply, re.IGNORECASE) is not None
    first = re.split(r"(?<=[.!?])\s|\n", reply.replace(",", ""), maxsplit=1)[0]
    numbers = _NUMBER.findall(first)
    return bool(numbers) and abs(float(numbers[-1]) - float(item.answer)) < 1e-9


def score(backend, items: list[ProbeItem], label: str = "", sink=null_sink, done: int = 0, total: int = 0) -> dict:
    """Greedy replies to every item: {score (0-100), correct, n, by_kind, failed (ids), seconds}."""
    t0, correct, by_kind, failed, examples = time.time(), 0, {}, [], []
    replies = replies_for(backend, [it.prompt for it in items], lambda i: sink(Progress(
        "probe", done + i, total or len(items), f"{label}: item {i}/{len(items)}")))
    for item, reply in zip(items, replies):
        ok = passes(reply, item)
        correct += ok
        k = by_kind.setdefault(item.kind, [0, 0])
        k[0], k[1] = k[0] + ok, k[1] + 1
        if not ok:
            failed.append(item.id)
        if len(examples) < 3:
            examples.append({"id": item.id, "prompt": item.prompt, "reply": reply.strip()[:200], "passed": ok})
    return {"score": 100.0 * correct / len(items), "correct": correct, "n": len(items),
            "by_kind": {k: round(100.0 * c / n, 1) for k, (c, n) in by_kind.items()}, "failed": failed,
            "examples": examples, "seconds": round(time.time() - t0, 2)}


def replies_for(backend, prompts: list[str], progress, batch: int = 25) -> list[str]:
    """Greedy replies, one per prompt. An HF model generates them in left-padded batches (about 10x faster on a CPU
    than one at a time); other backends (llama.cpp, onnxruntime) one by one through their chat stream."""
    if getattr(backend, "name", "") != "hf":
        out = []
        for i, p in enumerate(prompts, 1):
            out.append("".join(backend.stream([{"role": "user", "content": p}], PROBE_TOKENS, 0.0)))
            progress(i)
        return out
    import torch

    tok, model, out = backend.tokenizer, backend.model, []
    side, tok.padding_side = tok.padding_side, "left"
    try:
        for start in range(0, len(prompts), batch):
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                     for p in prompts[start:start + batch]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=PROBE_TOKENS, do_sample=False, eos_token_id=backend.stop_ids,
                                     pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else backend.stop_ids[0],
                                     repetition_penalty=backend.repeat_penalty)
            out += tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            progress(len(out))
    finally:
        tok.padding_side = side
    return out


def probe_targets(run_or_model: str, sink=null_sink) -> list[tuple[str, object]]:
    """The base model and the tuned one (merged, else base+adapter) of a run; a single model alone. Exported
    files are left out: export verification already compares them with the merged model."""
    from edgetune.evaluate import targets_for

    targets = targets_for(run_or_model, sink)
    return targets[:2]


def run_probe(run_or_model: str, max_drop: float | None = None, sink=null_sink, kinds: tuple[str, ...] = KINDS) -> dict:
    """Score the probe on base and tuned; on a run dir, record it in report.json under "forgetting" (eval rewrites
    report.md). `max_drop`: points of 100; default the run's `eval.max_probe_drop`."""
    from edgetune import runs
    from edgetune.evaluate import release

    is_run = (Path(run_or_model) / runs.CONFIG).is_file()
    if max_drop is None:
        from edgetune.config import EvalConfig

        max_drop = (runs.load_run_config(Path(run_or_model)).eval if is_run else EvalConfig()).max_probe_drop
    items = [it for it in load_probe() if it.kind in kinds]  # `kinds`: a quicker check on part of the probe
    targets = probe_targets(run_or_model, sink)
    sink(StageStarted("probe", f"forgetting check: {len(items)} general prompts x {len(targets)} model(s)"))
    t0, results = time.time(), []
    for t_index, (label, item) in enumerate(targets):
        built = not hasattr(item, "stream")
        backend = item() if built else item
        try:
            result = score(backend, items, label, sink, t_index * len(items), len(targets) * len(items))
        finally:
            release(backend, built)
        results.append({"label": label, **result})
        sink(Note(f"{label}: general probe {result['score']:.1f}/100 "
                  + ", ".join(f"{k} {v:g}" for k, v in result["by_kind"].items())))
    out = {"probe": str(probe_path().name), "items": len(items), "max_drop": max_drop, "targets": results,
           "how": f"greedy replies (at most {PROBE_TOKENS} tokens) to the shipped general probe, each checked by "
                  "its own rule (contains / exact / regex / number); score = percent passed"}
    if len(results) == 2:
        drop = results[0]["score"] - results[1]["score"]
        lost = sorted(set(results[1]["failed"]) - set(results[0]["failed"]))
        out.update(drop=drop, lost_items=lost, warning=drop > max_drop)
        if drop > max_drop:
            sink(Note(f"forgetting: the tuned model scores {drop:.1f} points below the base on the general probe "
                      f"(more than eval.max_probe_drop = {max_drop:g}); it lost {len(lost)} item(s) the base passed. "
                      "Fewer steps, a lower learning rate, a lower LoRA rank, or mixing general chat data into the "
                      "training set keep more of it", "warning"))
    sink(StageFinished("probe", time.time() - t0))
    if is_run:
        runs.update_report(Path(run_or_model), "forgetting", out)
    return out
