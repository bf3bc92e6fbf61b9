"""What the machine offers (GPU/VRAM or CPU/RAM, disk) and the profile that matches it."""
from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class HardwarePanel(Static):
    hardware = reactive(None, layout=True)
    profile = reactive("")

    def render(self) -> Text:
        hw = self.hardware
        if hw is None:
            return Text("Detecting hardware…", style="italic")
        text = Text()
        text.append("Hardware ", style="bold")
        text.append(hw.describe())
        text.append(f", {hw.disk_free_gb:.0f} GB free disk\n")
        text.append("Matching profile ", style="bold")
        text.append(self.profile or "-", style="bold cyan")
        return text
