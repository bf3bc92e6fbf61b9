"""Setup: detected hardware and profile, model (with whether it can be exported), dataset (checked live), method,
key settings with the memory estimate, save the config, start training (asking first when the model cannot be
exported the way the config asks)."""
from __future__ import annotations

import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select
from textual.worker import get_current_worker

from edgetune import config as C
from edgetune import runs
from edgetune.errors import ConfigError
from edgetune.tui import services
from edgetune.tui.messages import ErrorRaised, HardwareDetected, ModelInspected, ValidationFinished
from edgetune.tui.screens.confirm import ConfirmScreen
from edgetune.tui.widgets.data_preview import DataPreview
from edgetune.tui.widgets.hardware_panel import HardwarePanel
from edgetune.tui.widgets.memory_estimate import MemoryEstimateView

# (input id, label, config section, field, type)
SETTINGS = (
    ("max_steps", "Max steps", "train", "max_steps", int),
    ("learning_rate", "Learn rate", "train", "learning_rate", float),
    ("lora_r", "LoRA r", "lora", "r", int),
    ("batch_size", "Batch", "train", "batch_size", int),
    ("max_length", "Max length", "train", "max_length", int),
)


GRPO_FIELDS = ("rewards", "reward_pattern", "loss_type", "importance_sampling_level")  # shown only for GRPO
METHOD_LABELS = {"sft": "SFT (chat examples)", "dpo": "DPO (chosen/rejected pairs)", "kto": "KTO (labelled replies)",
                 "grpo": "GRPO (prompts + rewards)", "cpt": "CPT (raw text, continued pretraining)"}


def plan_for(profile: str, settings: dict, method: str, shape, hw):
    """The memory plan `edgetune train` will make for these settings (edgetune.memory.plan, max_length assumed
    until the data is read); ConfigError when a value is out of range or the precision does not suit `hw`."""
    from edgetune.engines import choose_precision
    from edgetune.memory import plan

    cfg = C.resolve(None, {**settings, "method": {"name": method}}, profile=profile, check=False)
    return plan(cfg, shape, hw, choose_precision(cfg.train.precision, hw))


def field_row(label: str, widget) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), widget, classes="field")


class SetupScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save config"),
        Binding("ctrl+t", "start", "Start training"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.shape = None  # ModelShape of the current model ref, once inspected
        self.support = None  # its ExportSupport (GGUF / ONNX), once inspected
        self.profile = ""

    def compose(self) -> ComposeResult:
        app = self.app
        profiles = C.list_profiles()
        yield Header()
        with Horizontal(id="setup-body"):
            with VerticalScroll(id="setup-form"):
                yield HardwarePanel(id="hardware")
                yield field_row("Profile", Select([(p, p) for p in profiles], value="cpu", allow_blank=False,
                                                  compact=True, id="profile"))
                yield field_row("Model", Input(app.model_ref, placeholder="default, hub id, dir or .gguf",
                                               compact=True, id="model"))
                yield Label("", id="export-support")
                yield field_row("Dataset", Input(app.data_path, placeholder=".jsonl/.json/.csv/.parquet path",
                                                 compact=True, id="data"))
                yield field_row("Method", Select([(METHOD_LABELS.get(m, m), m) for m in C.METHODS], value="sft",
                                                 allow_blank=False, compact=True, id="method"))
                yield field_row("Stages", Input("", placeholder="e.g. sft,dpo (empty: the method alone)",
                                                compact=True, id="stages"))
                yield field_row("Stage data", Input("", placeholder="dpo=pairs.jsonl,… (else Dataset)",
                                                    compact=True, id="stage_paths"))
                defaults = C.MethodConfig()  # GRPO's rewards: shown only while GRPO is the method or a stage
                yield field_row("Rewards", Input(",".join(defaults.rewards), compact=True, id="rewards",
                                                 placeholder="answer_match,length_penalty=0.1,my_mod:fn …"))
                yield field_row("Pattern", Input(defaults.reward_pattern, compact=True, id="reward_pattern",
                                                 placeholder="regex for regex_format"))
                yield field_row("GRPO loss", Select([(t, t) for t in C.GRPO_LOSS_TYPES], value=defaults.loss_type,
                                                    allow_blank=False, compact=True, id="loss_type"))
                yield field_row("Ratios", Select([("per token", "token"), ("per sequence (GSPO)", "sequence")],
                                                 value=defaults.importance_sampling_level, allow_blank=False,
                                                 compact=True, id="importance_sampling_level"))
                for input_id, label, *_ in SETTINGS:
                    yield field_row(label, Input("", compact=True, id=input_id,
                                                 type="number" if input_id == "learning_rate" else "integer"))
                yield field_row("Run name", Input("", placeholder="auto: <model>-<method>-<time>", compact=True,
                                                  id="run_name"))
                yield MemoryEstimateView(id="memory")
                with Horizontal(id="setup-buttons"):
                    yield Button("Save config", id="save", compact=True)
                    yield Button("Start training", id="start", variant="primary", compact=True)
            with VerticalScroll(id="setup-preview"):
                yield DataPreview(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.show_reward_fields()
        if self.app.hardware is None:
            self.detect_hardware()
        else:
            self.set_hardware(self.app.hardware)
        self.inspect_model(self.query_one("#model", Input).value)

    # --- hardware and profile ---------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="hardware")
    def detect_hardware(self) -> None:
        from edgetune.hardware import detect  # imports torch only: no need to wait for transformers

        self.post_message(HardwareDetected(detect()))

    def on_hardware_detected(self, message: HardwareDetected) -> None:
        self.app.hardware = message.hardware
        self.set_hardware(message.hardware)

    def set_hardware(self, hw) -> None:
        from edgetune.hardware import profile_for

        panel = self.query_one(HardwarePanel)
        panel.hardware, panel.profile = hw, profile_for(hw)
        select = self.query_one("#profile", Select)
        if select.value == profile_for(hw):
            self.fill_settings(select.value)
        select.value = profile_for(hw)

    @on(Select.Changed, "#profile")
    def profile_changed(self, event: Select.Changed) -> None:
        self.fill_settings(str(event.value))

    def fill_settings(self, profile: str) -> None:
        """Put the profile's values in the settings inputs (defaults < profile, as `edgetune train` layers them)."""
        self.profile = profile
        cfg = C.resolve(None, {}, profile=profile, check=False)
        for input_id, _, section, name, _ in SETTINGS:
            self.query_one(f"#{input_id}", Input).value = str(getattr(getattr(cfg, section), name))
        self.update_memory()

    # --- model and memory estimate ----------------------------------------------------------------------------
    @on(Input.Changed, "#model")
    def model_changed(self, event: Input.Changed) -> None:
        self.shape = self.support = None
        self.inspect_model(event.value)
        self.check_data()

    def inspect_model(self, ref: str) -> None:
        if not services.looks_loadable(ref):
            self.query_one(MemoryEstimateView).show_pending("enter a model (default, hub id, dir or .gguf)")
            self.query_one("#export-support", Label).update("")
            return
        self.query_one(MemoryEstimateView).show_pending(f"inspecting {ref}…")
        self.query_one("#export-support", Label).update("")
        self.run_inspect(ref.strip())

    @work(thread=True, exclusive=True, group="model")
    def run_inspect(self, ref: str) -> None:
        inspect = self.app.shape_of or services.model_shape
        try:
            shape, reason = inspect(ref), ""
        except Exception as e:  # shown inline: the user may still be typing the ref
            shape, reason = None, ErrorRaised.from_exception(e).message
        try:
            support = services.export_support(ref) if shape is not None else None
        except Exception:  # noqa: BLE001 - unknown support only hides the line; training re-checks it
            support = None
        if not get_current_worker().is_cancelled:
            self.post_message(ModelInspected(ref, shape, reason, support))

    def on_model_inspected(self, message: ModelInspected) -> None:
        if message.ref != self.query_one("#model", Input).value.strip():
            return  # a newer ref was typed meanwhile
        self.shape, self.support = message.shape, message.support
        self.query_one("#export-support", Label).update(message.support.describe() if message.support else "")
        if message.shape is None:
            self.query_one(MemoryEstimateView).show_pending(f"unavailable ({message.reason})")
        else:
            self.update_memory()

    @on(Input.Changed, "#stages")
    def stages_changed(self) -> None:
        self.show_reward_fields()
        self.check_data()

    def uses_grpo(self) -> bool:
        return self.method() == "grpo" or "grpo" in self.stages()

    def show_reward_fields(self) -> None:
        for input_id in GRPO_FIELDS:
            self.query_one(f"#{input_id}").parent.display = self.uses_grpo()

    @on(Input.Changed, "#max_steps, #learning_rate, #lora_r, #batch_size, #max_length")
    def settings_changed(self) -> None:
        self.update_memory()

    def update_memory(self) -> None:
        hw, view = self.app.hardware, self.query_one(MemoryEstimateView)
        if self.shape is None or hw is None:
            return
        try:
            plans = [plan_for(self.profile, self.settings(), method, self.shape, hw)
                     for method in self.stages() or [self.method()]]
        except ConfigError as e:
            view.show_pending(e.problems[0])
            return
        view.show(max(plans, key=lambda p: p.estimate.total_gb), self.shape.n_params)  # a staged run's peak stage

    # --- method ----------------------------------------------------------------------------------------------
    def method(self) -> str:
        return str(self.query_one("#method", Select).value)

    def stages(self) -> list[str]:
        return [s.strip().lower() for s in self.query_one("#stages", Input).value.split(",") if s.strip()]

    def first_method(self) -> str:
        """What the main dataset feeds: the method, or a staged run's first stage."""
        return self.stages()[0] if self.stages() and self.stages()[0] in C.METHODS else self.method()

    @on(Select.Changed, "#method")
    def method_changed(self) -> None:
        self.show_reward_fields()
        self.update_memory()
        self.check_data()

    # --- dataset check ----------------------------------------------------------------------------------------
    @on(Input.Changed, "#data")
    def data_changed(self) -> None:
        self.check_data()

    def check_data(self) -> None:
        path = self.query_one("#data", Input).value.strip()
        ref = self.query_one("#model", Input).value.strip()
        preview = self.query_one(DataPreview)
        if not path:
            preview.show_idle()
        elif not Path(path).expanduser().is_file() and not (self.first_method() == "cpt" and Path(path).expanduser().is_dir()):
            preview.show_idle(f"{path}: not a file yet (a hub dataset id is read at training time)")
        elif not services.looks_loadable(ref):
            preview.show_idle("set the model first: its chat template renders the data")
        else:
            preview.show_checking(path)
            max_length = self._int("max_length", 1024)
            self.run_check(ref, path, max_length, self.first_method())

    @work(thread=True, exclusive=True, group="data")
    def run_check(self, ref: str, path: str, max_length: int, method: str) -> None:
        try:
            report, example = services.check_dataset(ref, path, max_length, method)
            message = ValidationFinished(path, report, example)
        except Exception as e:
            message = ValidationFinished(path, None, None, ErrorRaised.from_exception(e))
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    def on_validation_finished(self, message: ValidationFinished) -> None:
        preview = self.query_one(DataPreview)
        if message.error is not None:
            preview.show_error(message.error.title, message.error.message, message.error.hint)
        else:
            preview.show_report(message.report, message.example)

    # --- config: save and start -------------------------------------------------------------------------------
    def _int(self, input_id: str, fallback: int) -> int:
        try:
            return int(self.query_one(f"#{input_id}", Input).value)
        except ValueError:
            return fallback

    def settings(self) -> dict:
        """The settings inputs as a partial config; ConfigError naming each field that does not parse."""
        out: dict = {}
        problems = []
        for input_id, label, section, name, kind in SETTINGS:
            raw = self.query_one(f"#{input_id}", Input).value.strip()
            try:
                out.setdefault(section, {})[name] = kind(raw)
            except ValueError:
                problems.append(f"{label} (`{section}.{name}`) = {raw!r}; enter {'an integer' if kind is int else 'a number'}")
        if problems:
            raise ConfigError(problems, hint="fix the settings on the setup screen")
        return out

    def build_config(self) -> C.RunConfig:
        overrides = self.settings()
        model = self.query_one("#model", Input).value.strip()
        overrides["model"] = {"ref": model}
        overrides["data"] = {"path": self.query_one("#data", Input).value.strip(),
                             "stage_paths": [p.strip() for p in self.query_one("#stage_paths", Input).value.split(",")
                                             if p.strip()]}
        overrides["method"] = {"name": self.method(), "stages": self.stages()}
        if self.uses_grpo():
            overrides["method"]["rewards"] = [r.strip() for r in self.query_one("#rewards", Input).value.split(",")
                                              if r.strip()]
            overrides["method"]["reward_pattern"] = self.query_one("#reward_pattern", Input).value
            for select_id in ("loss_type", "importance_sampling_level"):
                overrides["method"][select_id] = str(self.query_one(f"#{select_id}", Select).value)
        name = self.query_one("#run_name", Input).value.strip()
        method = "-".join(self.stages()) or self.method()
        name = runs.slug(name or f"{Path(model).stem}-{method}-{time.strftime('%Y%m%d-%H%M%S')}")
        overrides.update(name=name, run_dir=str(self.app.runs_root / name))
        return C.resolve(None, overrides, profile=self.profile)

    def _config_or_error(self) -> C.RunConfig | None:
        try:
            return self.build_config()
        except Exception as e:
            self.post_message(ErrorRaised.from_exception(e))
            return None

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        cfg = self._config_or_error()
        if cfg is None:
            return
        path = Path(cfg.run_dir) / runs.CONFIG
        cfg.save(path)
        self.notify(f"{path}\nreproduce: edgetune train -c {path}", title="Config saved", markup=False)

    @on(Button.Pressed, "#start")
    async def action_start(self) -> None:
        cfg = self._config_or_error()
        if cfg is None:
            return
        if self.support is not None and cfg.export.gguf and self.support.gguf is not None:
            question = (f"{cfg.model.ref} cannot be exported to GGUF: {self.support.gguf}\n\nTrain anyway? The run "
                        "keeps its adapter and can be merged, but `export --gguf` will refuse it.")
            self.app.push_screen(ConfirmScreen(question, "Train without GGUF export"), self._start_without_gguf(cfg))
            return
        await self.app.begin_training(cfg)

    def _start_without_gguf(self, cfg: C.RunConfig):
        async def answered(yes: bool | None) -> None:
            if yes:
                cfg.export.gguf = []
                await self.app.begin_training(cfg)
        return answered
