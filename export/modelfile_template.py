"""An Ollama TEMPLATE (Go template syntax) derived from any model's Jinja chat template, checked before use.

The Jinja template is rendered with sentinel contents (one and two turns, with and without a system message) and cut
at the sentinels into per-role pieces: what comes before and after a user message, before and after an assistant
reply, the generation prompt, what the template writes when no system message is given (a default system message,
Llama 3.x's date header, SmolLM3's metadata block; the date is frozen at export time), and where a system message
goes: its own block, folded into the first user turn (Gemma 3 does this, and edgetune folds it for templates that
reject system messages), or moved to the last user turn (Mistral v0.3). The same pieces then render the probe
conversations in Python exactly as the Go template will; `derive` returns pieces only when that re-rendering equals
the Jinja rendering for every probe (checked independently with Go's text/template on the family templates).

What it reproduces: system/user/assistant conversations. Not tools, images, or reasoning-channel formatting.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

S, U1, A1, U2 = "XQZSYSTEMQZX", "XQZUSERONEQZX", "XQZREPLYONEQZX", "XQZUSERTWOQZX"


@dataclass(frozen=True)
class Pieces:
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    generation: str
    system: str  # "block" | "first_user" | "last_user"
    system_prefix: str = ""
    system_suffix: str = ""
    fold_separator: str = "\n\n"
    no_system: str = ""  # what the template writes before the first user turn when the chat has no system message


def derive(render, bos: str | None, eos: str | None) -> Pieces | None:
    """Pieces that reproduce `render(messages, add_generation_prompt)` for system/user/assistant chats, or None."""
    try:
        pieces = _cut(render, bos, eos)
    except Exception:  # noqa: BLE001 - any template the cut cannot read (tools-only templates raise TypeError...)
        return None
    probes = [[{"role": "user", "content": U1}],
              [{"role": "user", "content": U1}, {"role": "assistant", "content": A1}, {"role": "user", "content": U2}],
              [{"role": "system", "content": S}, {"role": "user", "content": U1}],
              [{"role": "system", "content": S}, {"role": "user", "content": U1}, {"role": "assistant", "content": A1},
               {"role": "user", "content": U2}]]
    try:
        if all(simulate(pieces, m) == _strip_bos(_render(render, m), bos) for m in probes):
            return pieces
    except Exception:  # noqa: BLE001
        pass
    return None


def _render(render, messages):
    try:
        return render(messages, True)
    except Exception:  # noqa: BLE001 - a template that rejects the system role: folded, as training does
        system, user = messages[0]["content"], messages[1]
        return render([{**user, "content": f"{system}\n\n{user['content']}"}, *messages[2:]], True)


def _strip_bos(text: str, bos: str | None) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text  # Ollama adds BOS itself


def _between(text: str, left: str, right: str) -> str:
    start = text.index(left) + len(left)
    return text[start:text.index(right, start)]


def _common_suffix(a: str, b: str) -> str:
    return os.path.commonprefix([a[::-1], b[::-1]])[::-1]


def _cut(render, bos, eos) -> Pieces:
    two = _strip_bos(_render(render, [{"role": "user", "content": U1}, {"role": "assistant", "content": A1},
                                      {"role": "user", "content": U2}]), bos)
    head = two[:two.index(U1)]
    after_user, after_reply = _between(two, U1, A1), _between(two, A1, U2)
    generation_tail = two[two.index(U2) + len(U2):]  # user suffix + generation prompt
    # what precedes every user message (before the first one the template may also write a default system block):
    # split after the assistant's own ending when the template shows it (a reply rendered last), else where the
    # text before the first and before a later user message stop agreeing
    one = _strip_bos(render([{"role": "user", "content": U1}, {"role": "assistant", "content": A1}], False), bos)
    ending = one[one.index(A1) + len(A1):]
    if eos and ending.endswith(eos) and not after_reply.startswith(ending):
        ending = ending[: -len(eos)]  # eos the template appends after the whole conversation (Phi)
    user_prefix = after_reply[len(ending):] if after_reply.startswith(ending) and ending.strip() and \
        head.endswith(after_reply[len(ending):]) else _common_suffix(head, after_reply)
    # what follows a user turn: up to the generation prompt (the assistant header), else the part shared with the
    # text after the last user turn
    asked = _strip_bos(render([{"role": "user", "content": U1}], True), bos)
    told = _strip_bos(render([{"role": "user", "content": U1}], False), bos)
    prompt = asked[len(os.path.commonprefix([asked, told])):]
    if prompt and after_user.endswith(prompt) and generation_tail == after_user[: -len(prompt)] + prompt:
        user_suffix = after_user[: -len(prompt)]
    else:
        user_suffix = os.path.commonprefix([after_user, generation_tail])
    pieces = dict(user_prefix=user_prefix, user_suffix=user_suffix, assistant_prefix=after_user[len(user_suffix):],
                  assistant_suffix=after_reply[: len(after_reply) - len(user_prefix)],
                  generation=generation_tail[len(user_suffix):], no_system=head[: len(head) - len(user_prefix)])
    with_system = _strip_bos(_render(render, [{"role": "system", "content": S}, {"role": "user", "content": U1},
                                              {"role": "assistant", "content": A1},
                                              {"role": "user", "content": U2}]), bos)
    at, first, second = with_system.index(S), with_system.index(U1), with_system.index(U2)
    if at < first and with_system[at + len(S):first].endswith(user_prefix):
        between = with_system[at + len(S):first]
        return Pieces(**pieces, system="block", system_prefix=with_system[:at],
                      system_suffix=between[: len(between) - len(user_prefix)])
    placement = "first_user" if at < first else "last_user" if at < second else ""
    if not placement:
        raise ValueError("system message not found before a user message")
    return Pieces(**pieces, system=placement, fold_separator=_between(with_system, S, U1 if at < first else U2))


def simulate(p: Pieces, messages: list[dict]) -> str:
    """What the Go template of `p` renders for `messages` (Ollama: .System = the system message, BOS left out)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    chat = [m for m in messages if m["role"] != "system"]
    users = [i for i, m in enumerate(chat) if m["role"] == "user"]
    out = p.system_prefix + system + p.system_suffix if system and p.system == "block" else p.no_system
    for i, m in enumerate(chat):
        if m["role"] == "user":
            folded = system and ((p.system == "first_user" and i == users[0]) or
                                 (p.system == "last_user" and i == users[-1]))
            content = f"{system}{p.fold_separator}{m['content']}" if folded else m["content"]
            out += p.user_prefix + content + p.user_suffix
        else:
            out += p.assistant_prefix + m["content"] + p.assistant_suffix
    return out + p.generation


def go_template(p: Pieces) -> str:
    """The Ollama TEMPLATE text for `p` (what `simulate` computes)."""
    def lit(text: str) -> str:
        return text.replace("{{", '{{ "{{" }}')

    system_block = (f"{{{{ if .System }}}}{lit(p.system_prefix)}{{{{ .System }}}}{lit(p.system_suffix)}"
                    f"{{{{ else }}}}{lit(p.no_system)}{{{{ end }}}}" if p.system == "block" else lit(p.no_system))
    if p.system == "first_user":
        fold = f"{{{{ if and $.System (eq $i $first) }}}}{{{{ $.System }}}}{lit(p.fold_separator)}{{{{ end }}}}"
    elif p.system == "last_user":
        fold = f"{{{{ if and $.System (eq $i $last) }}}}{{{{ $.System }}}}{lit(p.fold_separator)}{{{{ end }}}}"
    else:
        fold = ""
    indices = ("{{- $first := -1 }}{{- $last := -1 }}{{- range $i, $m := .Messages }}{{ if eq $m.Role \"user\" }}"
               "{{ if eq $first -1 }}{{ $first = $i }}{{ end }}{{ $last = $i }}{{ end }}{{ end }}") if fold else ""
    return (f"{indices}{system_block}{{{{- range $i, $m := .Messages }}}}"
            f"{{{{ if eq $m.Role \"user\" }}}}{lit(p.user_prefix)}{fold}{{{{ $m.Content }}}}{lit(p.user_suffix)}"
            f"{{{{ else if eq $m.Role \"assistant\" }}}}{lit(p.assistant_prefix)}{{{{ $m.Content }}}}"
            f"{lit(p.assistant_suffix)}{{{{ end }}}}{{{{ end }}}}{lit(p.generation)}")
