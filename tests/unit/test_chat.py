"""Chat: piped stdin gives one reply per line (scriptable); --compare labels both models; real llama.cpp and HF."""
import io
import subprocess
import sys

import pytest

from edgetune.chat import ChatSession, chat_loop


class Canned:
    name = "canned"
    finish_reason = "stop"

    def __init__(self, prefix):
        self.prefix, self.seen = prefix, []

    def stream(self, messages, max_tokens, temperature):
        self.seen.append(messages)
        yield f"{self.prefix}: "
        yield messages[-1]["content"].upper()


def test_piped_lines_get_one_reply_each():
    backend = Canned("A")
    out = io.StringIO()
    chat_loop(ChatSession(backend, "a", system="be brief"), stdin=io.StringIO("hello\n\nworld\n"), stdout=out)
    assert out.getvalue() == "A: HELLO\nA: WORLD\n"
    assert backend.seen[1] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "world"}], \
        "piped lines are independent (no history), system prompt first"


def test_compare_answers_with_both_models():
    out = io.StringIO()
    chat_loop(ChatSession(Canned("T"), "tuned"), stdin=io.StringIO("hi\n"), stdout=out,
              compare=ChatSession(Canned("B"), "base"))
    assert out.getvalue() == "[tuned] T: HI\n[base] B: HI\n"


def test_history_kept_in_a_conversation():
    backend = Canned("A")
    s = ChatSession(backend, "a")
    s.ask("one")
    s.ask("two")
    assert [m["content"] for m in backend.seen[1]] == ["one", "A: ONE", "two"]


def test_real_gguf_through_the_cli(tiny_model_dir, tmp_path):
    from edgetune.export.gguf_convert import convert

    gguf = convert(tiny_model_dir, tmp_path / "tiny.F16.gguf", "f16")
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "chat", str(gguf), "--max-tokens", "5"],
                         input="first question\nsecond question\n", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("\n") >= 2 and out.stderr == ""  # random weights: the replies are noise


def test_hf_run_dir_with_adapter(tiny_model_dir, chat_jsonl, tmp_path):
    from edgetune import config as C
    from edgetune.chat import open_chat
    from edgetune.train import train

    run = tmp_path / "run"
    train(C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False}, "data": {"path": str(chat_jsonl)},
                           "run_dir": str(run), "train": {"max_steps": 2}}, profile="cpu"))
    session = open_chat(str(run), max_tokens=4)
    assert "adapter" in session.label
    reply = session.ask("hello", keep_history=False)
    # two steps on random weights do not teach it to stop: it runs to the limit, and says so (a forced stop is
    # tested per family in test_family_stops.py)
    assert reply.finish_reason == "length" and reply.text


def test_a_conversation_longer_than_the_context_is_a_clear_error(tiny_model_dir, tmp_path):
    from edgetune.errors import EdgetuneError
    from edgetune.chat import open_chat
    from edgetune.export.gguf_convert import convert

    gguf = convert(tiny_model_dir, tmp_path / "tiny.F16.gguf", "f16")  # trained context: 512 tokens
    session = open_chat(str(gguf), max_tokens=4)
    with pytest.raises(EdgetuneError, match="does not fit the model's context") as err:
        session.ask("hello " * 600)
    assert "/reset" in err.value.hint
