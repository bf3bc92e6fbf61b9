"""The training memory estimate against the machine's budget; recomputed on every settings change (plain
arithmetic in edgetune.memory, so it runs on the UI thread)."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from edgetune.memory import MemoryEstimate


def budget_gb(hw) -> float:
    """Same budget as edgetune.train.plan_memory: 92% of VRAM, 80% of RAM on CPU."""
    return hw.vram_gb * 0.92 if hw.device == "cuda" else hw.ram_gb * 0.8


class MemoryEstimateView(Static):
    def show_pending(self, why: str) -> None:
        self.update(Text(f"Memory estimate: {why}", style="italic"))

    def show(self, est: MemoryEstimate, budget: float, n_params: int) -> None:
        fits = est.total_gb <= budget
        text = Text()
        text.append("Memory estimate ", style="bold")
        text.append(f"{est.total_gb:.2f} GB", style="bold green" if fits else "bold red")
        text.append(f" of {budget:.1f} GB budget ({n_params / 1e6:,.1f}M params)\n")
        text.append(f"weights {est.weights_gb:.2f} + LoRA/optim {est.adapter_gb:.2f} + activations "
                    f"{est.activations_gb:.2f} + logits {est.logits_gb:.2f} + runtime {est.overhead_gb:.2f}",
                    style="dim")
        if not fits:
            text.append("\ntoo big: lower batch or max length (training halves the batch on CUDA)", style="red")
        self.update(text)
