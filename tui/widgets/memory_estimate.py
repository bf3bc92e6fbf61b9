"""The training memory plan against the machine's budget; recomputed on every settings change (plain arithmetic in
edgetune.memory.plan, the same call `edgetune train` makes, so it runs on the UI thread)."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from edgetune.memory import MemoryPlan


class MemoryEstimateView(Static):
    def show_pending(self, why: str) -> None:
        self.update(Text(f"Memory estimate: {why}", style="italic"))

    def show(self, plan: MemoryPlan, n_params: int) -> None:
        est, budget = plan.estimate, plan.budget_gb
        text = Text()
        text.append("Memory estimate ", style="bold")
        text.append(f"{est.total_gb:.2f} GB", style="bold green" if plan.fits else "bold red")
        text.append(f" of {budget:.1f} GB budget ({n_params / 1e6:,.1f}M params)\n")
        text.append(f"weights {est.weights_gb:.2f} + LoRA/optim {est.adapter_gb:.2f} + activations "
                    f"{est.activations_gb:.2f} + logits {est.logits_gb:.2f} + runtime {est.overhead_gb:.2f}",
                    style="dim")
        if est.loading_gb > est.total_gb:  # the same peak `edgetune train` prints
            text.append(f"\nwhile loading {est.loading_gb:.2f} GB: the {est.checkpoint_gb:.1f} GB checkpoint file "
                        "stays mapped until the last weight is in (pages the OS can drop)", style="dim")
        for note, level in plan.notes:
            if level == "warning":  # the batch training will use instead, or why nothing fits
                text.append(f"\n{note}", style="yellow" if plan.fits else "red")
        self.update(text)
