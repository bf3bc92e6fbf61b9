"""Help (F1 or ?): what each screen is for and its keys."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# edgetune

Guided run: **Setup → Train → Export → Chat**. Every stage reads and writes one run directory under `runs/`,
so any stage can be reopened from **Runs**.

| key | |
|---|---|
| F2 / F3 / F4 / F5 / F6 | Setup / Train / Export / Chat / Runs |
| F1 or ? | this help (Esc closes) |
| Ctrl+Q | quit (a running training writes a checkpoint first) |
| Tab / Shift+Tab | move between fields |

**Setup**: Ctrl+S saves the config into the run directory, Ctrl+T starts training. The dataset is checked as
you type its path; in the example, green text is trained on, dim text is masked.

**Train**: s stops (writes a resumable checkpoint), r resumes, e goes to Export.

**Export**: space ticks GGUF types (or auto: the smallest type whose mean KLD stays under the budget),
Ctrl+E exports; the table shows what was verified. c goes to Chat.

**Chat**: Enter asks the tuned GGUF and the base the same prompt; Ctrl+L clears the history.

**Runs**: Enter opens a run at its next stage; t / e / c open it at Train / Export / Chat.

The same steps from a shell: `edgetune train`, `edgetune export`, `edgetune chat`.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,f1,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
