"""Trainer callbacks that turn TRL/transformers training into edgetune events, and stop cleanly on Ctrl-C."""
from __future__ import annotations

import signal
import threading
import time

from transformers import TrainerCallback

from edgetune.events import CheckpointSaved, EvalDone, SampleGenerated, TrainStarted, TrainStep


def memory_mb() -> float | None:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


class EventCallback(TrainerCallback):
    """Emit a TrainStep per log line (loss, lr, grad norm, tokens/s, memory, ETA) and checkpoint events."""

    WINDOW = 10  # steps the rates average over: recent speed, not diluted by a slow first step

    def __init__(self, sink, engine: str = "", method: str = ""):
        self.sink, self.engine, self.method = sink, engine, method
        self.marks: list[tuple[float, int, int]] = []  # (time, step, tokens seen) at each log

    def on_train_begin(self, args, state, control, **kw):
        self.marks = [(time.perf_counter(), state.global_step, state.num_input_tokens_seen or 0)]
        # Here, not before trainer.train(): max_steps is resolved (epochs) and a resumed global_step is loaded.
        self.sink(TrainStarted(max_steps=state.max_steps, start_step=state.global_step, engine=self.engine,
                               method=self.method))

    def on_log(self, args, state, control, logs=None, **kw):
        logs = dict(logs or {})
        if any(k.startswith("eval_") for k in logs):
            self.sink(EvalDone(step=state.global_step, metrics={k: v for k, v in logs.items() if k.startswith("eval_")}))
            return
        if "loss" not in logs:
            return  # the end-of-training summary line
        self.marks.append((time.perf_counter(), state.global_step, state.num_input_tokens_seen or 0))
        self.marks = self.marks[-(self.WINDOW + 1):]
        (t0, s0, k0), (t1, s1, k1) = self.marks[0], self.marks[-1]
        elapsed, tokens = t1 - t0, k1 - k0
        rate = (s1 - s0) / elapsed if elapsed > 0 and s1 > s0 else None
        extra = {k: v for k, v in logs.items() if k not in ("loss", "learning_rate", "grad_norm", "epoch")
                 and isinstance(v, (int, float))}
        self.sink(TrainStep(
            step=state.global_step, max_steps=state.max_steps, loss=_f(logs.get("loss")),
            learning_rate=_f(logs.get("learning_rate")), grad_norm=_f(logs.get("grad_norm")),
            tokens_per_s=tokens / elapsed if elapsed > 0 and tokens else None, memory_mb=memory_mb(),
            eta_s=(state.max_steps - state.global_step) / rate if rate else None, epoch=_f(logs.get("epoch")),
            extra=extra))

    def on_save(self, args, state, control, **kw):
        from pathlib import Path

        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.sink(CheckpointSaved(step=state.global_step, path=str(path), reason="interval"))


def _f(x):
    return float(x) if isinstance(x, (int, float)) else None


class StopOnSignal(TrainerCallback):
    """First Ctrl-C (or SIGTERM): finish the current step, write a checkpoint, stop. A second one aborts at once.

    Also stoppable programmatically (`request_stop()`), which is how the TUI's Stop button works.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.stop = threading.Event()
        self._previous: dict = {}
        self._first = 0.0

    def request_stop(self):
        self.stop.set()

    def _handler(self, signum, frame):
        if self.stop.is_set() and not self._echo():
            self.uninstall()
            raise KeyboardInterrupt
        self._first = self._first or time.monotonic()
        self.stop.set()

    def _echo(self) -> bool:
        """A worker under torchrun / accelerate launch gets a terminal's Ctrl-C twice within milliseconds (from the
        terminal and again from the launcher): that is one request to stop, not the second that aborts."""
        from edgetune.distributed import inside_launch

        return inside_launch() and time.monotonic() - (self._first or 0) < 1.0

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}

    def uninstall(self):
        if self._previous and threading.current_thread() is threading.main_thread():
            for s, previous in self._previous.items():
                signal.signal(s, previous if previous is not None else signal.SIG_DFL)
            self._previous = {}

    def on_step_end(self, args, state, control, **kw):
        from edgetune.distributed import agree_to_stop

        if agree_to_stop(self.stop.is_set(), args.device):  # on N processes, all stop after the same step
            self.stop.set()
            control.should_save = True
            control.should_training_stop = True
        return control


class SampleCallback(TrainerCallback):
    """Every `every` steps, a greedy reply (up to `max_new_tokens`) to one fixed prompt, as a SampleGenerated event."""

    def __init__(self, sink, tokenizer, prompt: str, every: int, max_new_tokens: int = 32):
        self.sink, self.tokenizer, self.prompt, self.every, self.max_new_tokens = sink, tokenizer, prompt, every, max_new_tokens

    def on_step_end(self, args, state, control, model=None, **kw):
        if not self.every or model is None or state.global_step % self.every:
            return
        import torch

        enc = self.tokenizer.apply_chat_template([{"role": "user", "content": self.prompt}], add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        from edgetune.stops import stop_ids

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=self.tokenizer.pad_token_id,
                                     eos_token_id=stop_ids(self.tokenizer, model=model))
        finally:
            model.train(was_training)
        text = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        self.sink(SampleGenerated(step=state.global_step, prompt=self.prompt, text=text))
