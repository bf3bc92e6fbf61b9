"""Row formats: detect which one a row uses and normalise it to chat messages.

Every format ends up as `[{"role": "system"|"user"|"assistant", "content": str}, ...]`: an optional system message,
then user/assistant turns alternating, ending with an assistant turn (the last reply is what the model learns).
A bad row raises `RowError(reason, fix)`; the loader attaches file and line.
"""
from __future__ import annotations

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion")
ROLES = ("system", "user", "assistant")

# ShareGPT speakers, mapped to roles (the names seen in the wild).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "chatgpt": "assistant", "bing": "assistant", "system": "system"}

SHAPES = {
    "messages": '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
    "sharegpt": '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}',
    "alpaca": '{"instruction": "...", "input": "", "output": "..."}',
    "prompt_completion": '{"prompt": "...", "completion": "..."}',
}
ANY_SHAPE = "write each row as one of: " + "; ".join(SHAPES[f] for f in FORMATS)


class RowError(ValueError):
    """One row cannot be used: `reason` says what is wrong, `fix` what to write instead."""

    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def detect_format(row: dict) -> str | None:
    """The format a row is written in, judged by its keys; None when it fits none."""
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("messages"), list):
        return "messages"
    if isinstance(row.get("conversations"), list):
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    return None


def normalize(row: dict, fmt: str, system_prompt: str = "") -> list[dict]:
    """Chat messages for `row` read as `fmt`; `system_prompt` is prepended when the row has no system message."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if not isinstance(row, dict):
        raise RowError(f"row is a JSON {json_type(row)}, not an object", ANY_SHAPE)
    messages = _READERS[fmt](row)
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    check_conversation(messages)
    return messages


# --- one reader per format ------------------------------------------------------------------------------------

def _from_messages(row: dict) -> list[dict]:
    turns = _require_list(row, "messages")
    out = []
    for i, m in enumerate(turns, 1):
        if not isinstance(m, dict):
            raise RowError(f"messages[{i}] is a JSON {json_type(m)}, not an object",
                           'write each message as {"role": "user", "content": "..."}')
        role = m.get("role")
        if role not in ROLES:
            raise RowError(f"messages[{i}] has role {role!r}", _role_fix(role))
        out.append({"role": role, "content": _text(m.get("content"), f"messages[{i}].content")})
    return out


def _from_sharegpt(row: dict) -> list[dict]:
    turns = _require_list(row, "conversations")
    out = []
    for i, m in enumerate(turns, 1):
        if not isinstance(m, dict):
            raise RowError(f"conversations[{i}] is a JSON {json_type(m)}, not an object",
                           'write each turn as {"from": "human", "value": "..."}')
        # Some exports mix in messages-style keys; accept them rather than reject a usable row.
        speaker = m.get("from", m.get("role"))
        role = SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise RowError(f"conversations[{i}] has from={speaker!r}",
                           f"use one of: {', '.join(sorted(SHAREGPT_ROLES))}")
        value = m["value"] if "value" in m else m.get("content")
        out.append({"role": role, "content": _text(value, f"conversations[{i}].value")})
    return out


def _from_alpaca(row: dict) -> list[dict]:
    for key in ("instruction", "output"):
        if key not in row:
            raise RowError(f"alpaca row has no `{key}`", SHAPES["alpaca"])
    instruction = _text(row["instruction"], "instruction")
    extra = row.get("input")
    extra = "" if extra is None else _text(extra, "input", allow_empty=True)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row["output"], "output")}]


def _from_prompt_completion(row: dict) -> list[dict]:
    for key in ("prompt", "completion"):
        if key not in row:
            raise RowError(f"prompt/completion row has no `{key}`", SHAPES["prompt_completion"])
    # TRL's conversational variant: prompt and completion are message lists.
    prompt, completion = row["prompt"], row["completion"]
    head = (_from_messages({"messages": prompt}) if isinstance(prompt, list)
            else [{"role": "user", "content": _text(prompt, "prompt")}])
    tail = (_from_messages({"messages": completion}) if isinstance(completion, list)
            else [{"role": "assistant", "content": _text(completion, "completion")}])
    return head + tail


_READERS = {"messages": _from_messages, "sharegpt": _from_sharegpt, "alpaca": _from_alpaca,
            "prompt_completion": _from_prompt_completion}


# --- checks shared by every format ----------------------------------------------------------------------------

def check_conversation(messages: list[dict]) -> None:
    """Raise RowError unless: optional system first, then user/assistant alternating, ending with assistant."""
    if not messages:
        raise RowError("conversation is empty", "add at least one user turn and one assistant reply")
    for i, m in enumerate(messages[1:], 2):
        if m["role"] == "system":
            raise RowError(f"turn {i} is a system message; only the first turn may be one",
                           "move the system message to the start, or merge it into the user turn")
    chat = messages[1:] if messages[0]["role"] == "system" else messages
    if not any(m["role"] == "assistant" for m in chat):
        raise RowError("conversation has no assistant turn, so there is nothing to learn",
                       "add the assistant reply after the last user turn")
    offset = len(messages) - len(chat)
    for i, m in enumerate(chat):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise RowError(f"turn {i + 1 + offset} is {m['role']!r} but {want!r} was expected "
                           "(turns must alternate user, assistant, starting with user)",
                           "merge consecutive turns of the same role, or start the conversation with a user turn")
    if chat[-1]["role"] != "assistant":
        raise RowError(f"conversation ends with a {chat[-1]['role']} turn; the last turn must be the assistant's",
                       "add the assistant reply after the last user turn, or drop the trailing user turn")


def _role_fix(role) -> str:
    fix = f"use one of: {', '.join(ROLES)}"
    guess = SHAREGPT_ROLES.get(str(role).lower()) or {"bot": "assistant", "ai": "assistant", "human": "user"}.get(str(role).lower())
    if guess:
        return f"{fix} (for {role!r} write {guess!r})"
    if role in ("tool", "function", "ipython"):
        return f"{fix}; tool turns are not supported for training, so drop them or fold them into the text"
    return fix


def _require_list(row: dict, key: str) -> list:
    value = row.get(key)
    if not isinstance(value, list):
        raise RowError(f"`{key}` is {json_type(value)}, not a list", SHAPES["messages" if key == "messages" else "sharegpt"])
    return value


def _text(value, where: str, allow_empty: bool = False) -> str:
    """A message's text; OpenAI-style lists of text parts are joined."""
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        value = "".join(str(p.get("text", "")) for p in value)
    if value is None:
        raise RowError(f"{where} is null", f"give {where} a string (the message text)")
    if not isinstance(value, str):
        raise RowError(f"{where} is a JSON {json_type(value)}, not a string",
                       f"write {where} as a quoted string, e.g. {str(value)[:20]!r}" if isinstance(value, (int, float))
                       else f"write {where} as a string (only text content is supported)")
    if not allow_empty and not value.strip():
        raise RowError(f"{where} is empty", f"write the text of {where}, or drop the row")
    return value


def json_type(value) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__)
