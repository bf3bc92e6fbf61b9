"""One side of the chat (base or tuned): a title and the conversation, streamed as it is generated."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Label, Static


class ChatPane(VerticalScroll):
    def __init__(self, side: str, title: str, **kw):
        super().__init__(**kw)
        self.side, self.title = side, title
        self.transcript = Text()
        self.partial = ""

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="pane-title")
        yield Static(Text("(not loaded)", style="italic"), classes="transcript")

    def set_title(self, title: str) -> None:
        self.title = title
        self.query_one(Label).update(title)

    def clear(self) -> None:
        self.transcript, self.partial = Text(), ""
        self._refresh()

    def user(self, prompt: str) -> None:
        self.transcript.append(f"you: {prompt}\n", style="bold")
        self.partial = ""
        self._refresh()

    def stream(self, piece: str) -> None:
        self.partial += piece
        self._refresh()

    def reply(self, text: str, finish: str) -> None:
        self.partial = ""
        self.transcript.append(f"{text}\n", style="green")
        if finish == "length":
            self.transcript.append("(hit the token limit without stopping)\n", style="yellow")
        self._refresh()

    def _refresh(self) -> None:
        shown = self.transcript.copy()
        if self.partial:
            shown.append(self.partial, style="green")
        self.query_one(".transcript", Static).update(shown)
        self.scroll_end(animate=False)  # follow the reply as it streams
