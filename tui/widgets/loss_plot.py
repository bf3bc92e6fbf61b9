"""Live training loss (and reward, when a method reports one) with textual-plotext."""
from __future__ import annotations

from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.rewards: list[float] = []

    def on_mount(self) -> None:
        self.plt.title("loss")
        self.plt.xlabel("step")

    def reset(self, method: str = "") -> None:
        self.steps, self.losses, self.rewards = [], [], []
        self.plt.title(f"{method} loss".strip())
        self.replot()

    def add(self, step: int, loss: float | None, reward: float | None = None) -> None:
        if loss is None:
            return
        self.steps.append(step)
        self.losses.append(loss)
        if reward is not None:
            self.rewards.append(reward)
        self.replot()

    def replot(self) -> None:
        self.plt.clear_data()
        if self.steps:
            self.plt.plot(self.steps, self.losses, marker="braille", label="loss")
            if len(self.rewards) == len(self.steps):
                self.plt.plot(self.steps, self.rewards, marker="braille", label="reward")
        self.refresh()
