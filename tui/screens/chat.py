"""Chat with the exported GGUF through llama.cpp, the base model answering the same prompt beside it."""
from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Input, Static

from edgetune import runs
from edgetune.tui.messages import ChatOpened, ChatReplied, ChatStreamed, ErrorRaised
from edgetune.tui.screens.run_screen import RunScreen
from edgetune.tui.widgets.chat_pane import ChatPane

SIDES = ("base", "tuned")


def base_target(ref: str) -> str:
    """The base as a chat target: the embedded default's own GGUF (llama.cpp, like the tuned file), else the ref."""
    from edgetune.models import DEFAULT_MODEL, default_gguf_path

    return str(default_gguf_path()) if ref == DEFAULT_MODEL else ref


def tuned_target(run_dir: Path) -> Path | None:
    """The smallest kept GGUF of the run (what `edgetune chat RUN_DIR` picks), F16 only if nothing else."""
    files = sorted((run_dir / runs.GGUF).glob("*.gguf"), key=lambda f: f.stat().st_size)
    return files[0] if files else None


class ChatScreen(RunScreen):
    BINDINGS = [Binding("ctrl+l", "reset", "Clear history")]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("No exported model: export one (F4) or open a run (F6).", id="chat-run")
        with Horizontal(id="chat-panes"):
            yield ChatPane("base", "base", id="pane-base")
            yield ChatPane("tuned", "tuned", id="pane-tuned")
        yield Input(placeholder="Ask both models… (Enter)", id="prompt", disabled=True)
        yield Footer()

    def open_run(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        tuned = tuned_target(self.run_dir)
        if tuned is None:
            self.query_one("#chat-run", Static).update(f"Run {self.run_dir} has no GGUF yet: export it first (F4).")
            return
        self.query_one("#chat-run", Static).update(f"Loading {tuned.name} and the base…")
        self.sessions = {}
        self.load_sessions(self.run_dir, tuned)

    @work(thread=True, exclusive=True, group="chat-load")
    def load_sessions(self, run_dir: Path, tuned: Path) -> None:
        from edgetune.tui.services import heavy_imports

        heavy_imports()
        from edgetune.chat import open_chat
        from edgetune.runs import load_run_config

        try:
            cfg = load_run_config(run_dir)
            system = cfg.data.system_prompt or None
            n = self.app.chat_max_tokens
            for side, target in (("tuned", str(tuned)), ("base", base_target(cfg.model.ref))):
                self.sessions[side] = open_chat(target, system=system, max_tokens=n)
                self.post_message(ChatOpened(side, self.sessions[side].label))
        except Exception as e:
            self.post_message(ErrorRaised.from_exception(e))

    def on_chat_opened(self, message: ChatOpened) -> None:
        self.query_one(f"#pane-{message.side}", ChatPane).set_title(f"{message.side}: {message.label}")
        if all(s in self.sessions for s in SIDES):
            self.query_one("#chat-run", Static).update(f"Run {self.run_dir}: same prompt to both, greedy")
            prompt = self.query_one("#prompt", Input)
            prompt.disabled = False
            prompt.focus()

    @on(Input.Submitted, "#prompt")
    def ask(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or not self.sessions:
            return
        event.input.value = ""
        event.input.disabled = True
        for side in SIDES:
            self.query_one(f"#pane-{side}", ChatPane).user(text)
        self.run_ask(text)

    @work(thread=True, exclusive=True, group="chat-ask")
    def run_ask(self, prompt: str) -> None:
        for side in ("tuned", "base"):
            try:
                reply = self.sessions[side].ask(prompt, on_text=lambda piece, s=side: self.post_message(
                    ChatStreamed(s, piece)))
                self.post_message(ChatReplied(side, reply.text, reply.finish_reason))
            except Exception as e:
                self.post_message(ErrorRaised.from_exception(e))
                self.post_message(ChatReplied(side, "", "error"))

    def on_chat_streamed(self, message: ChatStreamed) -> None:
        self.query_one(f"#pane-{message.side}", ChatPane).stream(message.piece)

    def on_chat_replied(self, message: ChatReplied) -> None:
        self.query_one(f"#pane-{message.side}", ChatPane).reply(message.text, message.finish)
        if message.side == "base":  # the last side to answer
            prompt = self.query_one("#prompt", Input)
            prompt.disabled = False
            prompt.focus()

    def action_reset(self) -> None:
        for s in self.sessions.values():
            s.history.clear()
        for side in SIDES:
            self.query_one(f"#pane-{side}", ChatPane).clear()
