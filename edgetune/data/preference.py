"""Rows for the preference and RL methods, checked with file:line problems like SFT data.

dpo:  {"prompt", "chosen", "rejected"}   each a string, or chat messages (prompt: ... ending with a user turn;
                                          chosen/rejected: the assistant reply, as a string or [assistant message])
kto:  {"prompt", "completion", "label"}  unpaired: label true (desirable) or false
grpo: {"prompt", "answer"}               the answer is what reward functions check completions against
Rows are normalised to TRL's conversational format (prompt = message list, completions = [assistant message]).
"""
from __future__ import annotations

from edgetune.data.formats import RowError, json_type
from edgetune.data.load import Problem, read_rows
from edgetune.errors import DataError

SHAPES = {
    "dpo": '{"prompt": "...", "chosen": "...", "rejected": "..."}',
    "kto": '{"prompt": "...", "completion": "...", "label": true}',
    "grpo": '{"prompt": "...", "answer": "..."}',
}


def _prompt(row: dict) -> list[dict]:
    value = row.get("prompt")
    if isinstance(value, str):
        if not value.strip():
            raise RowError("`prompt` is empty", "write the user's request in `prompt`")
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        for i, m in enumerate(value, 1):
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                raise RowError(f"prompt[{i}] is not a {{role, content}} message", 'write {"role": "user", "content": "..."}')
        if value[-1]["role"] != "user":
            raise RowError("the prompt's last message is not from the user", "end `prompt` with the user turn to answer")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise RowError(f"`prompt` is {json_type(value)}", "give `prompt` as a string or a list of chat messages")


def _reply(row: dict, key: str) -> list[dict]:
    value = row.get(key)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        if value[0].get("role") != "assistant":
            raise RowError(f"`{key}` message has role {value[0].get('role')!r}", f"`{key}` is the assistant's reply")
        value = value[0].get("content")
    if value is None:
        raise RowError(f"`{key}` is missing or null", f"give `{key}` the assistant reply as a string")
    if not isinstance(value, str):
        raise RowError(f"`{key}` is {json_type(value)}, not a string", f"write `{key}` as a quoted string")
    if not value.strip():
        raise RowError(f"`{key}` is empty", f"write the assistant reply in `{key}`")
    return [{"role": "assistant", "content": value}]


def normalize_row(row: dict, method: str) -> dict:
    if not isinstance(row, dict):
        raise RowError(f"row is a JSON {json_type(row)}, not an object", f"write one object per row: {SHAPES[method]}")
    missing = [k for k in {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label"),
                           "grpo": ("prompt", "answer")}[method] if k not in row]
    if missing:
        raise RowError(f"missing {', '.join(f'`{k}`' for k in missing)}", f"{method} rows look like {SHAPES[method]}")
    prompt = _prompt(row)
    if method == "dpo":
        chosen, rejected = _reply(row, "chosen"), _reply(row, "rejected")
        if chosen[0]["content"].strip() == rejected[0]["content"].strip():
            raise RowError("`chosen` and `rejected` are identical", "a pair must differ: drop the row or fix one side")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if method == "kto":
        if not isinstance(row["label"], bool):
            raise RowError(f"`label` is {json_type(row['label'])}", "write `label` as true (desirable) or false")
        return {"prompt": prompt, "completion": _reply(row, "completion"), "label": row["label"]}
    answer = row["answer"]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise RowError(f"`answer` is {json_type(row['answer'])} or empty", "write the reference answer as a string")
    return {"prompt": prompt, "answer": answer}


def load_method_rows(path: str, method: str, split: str = "train",
                     system_prompt: str = "") -> tuple[list[dict], list[Problem]]:
    """Normalised rows for `method` (dpo, kto or grpo) plus a Problem per skipped row; DataError when none is usable.
    `system_prompt` goes in front of every prompt that has no system message, as for SFT rows."""
    problems: list[Problem] = []
    records = read_rows(path, split, problems)
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    unit = problems[0].unit if problems else ("line" if str(path).endswith((".jsonl", ".csv")) else "row")
    rows = []
    for pos, raw in records:
        try:
            row = normalize_row(raw, method)
        except RowError as e:
            problems.append(Problem(name, pos, e.reason, e.fix, unit))
            continue
        if system_prompt and row["prompt"][0]["role"] != "system":
            row["prompt"] = [{"role": "system", "content": system_prompt}, *row["prompt"]]
        rows.append(row)
    if not rows:
        listed = "\n".join(f"  - {p}" for p in problems[:10])
        raise DataError(f"{path}: no usable {method} rows ({len(problems)} rejected)\n{listed}",
                        hint=f"{method} rows look like {SHAPES[method]}", problems=[str(p) for p in problems])
    return rows, problems
