"""Config: defaults once, TOML round trip, layering, and validation that lists every problem."""
import tomllib

import pytest

from edgetune import config as C
from edgetune.errors import ConfigError


def test_defaults_validate_once_data_is_set():
    cfg = C.RunConfig()
    cfg.data.path = "x.jsonl"
    C.validate(cfg)


def test_every_field_has_a_help_line():
    for cls in [C.RunConfig, *C.SECTIONS.values()]:
        for f in C._section_fields(cls).values():
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_toml_round_trip(tmp_path):
    cfg = C.RunConfig()
    cfg.data.path, cfg.train.max_steps, cfg.lora.target_modules = "d.jsonl", 7, ["q_proj", "v_proj"]
    path = tmp_path / "config.toml"
    cfg.save(path)
    again = C.resolve(path, check=True)
    assert again == cfg


def test_layering_profile_file_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nbatch_size = 3\nmax_length = 300\n[data]\npath = "d.jsonl"\n')
    cfg = C.resolve(path, {"train": {"max_length": 128}}, profile="gpu-8gb")
    assert cfg.profile == "gpu-8gb"
    assert cfg.lora.r == 16 and cfg.train.grad_accum == 4  # from the profile
    assert cfg.train.batch_size == 3  # file beats profile
    assert cfg.train.max_length == 128  # flag beats file


def test_every_problem_reported_at_once(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nmax_seq_length = 512\nbatch_size = "four"\nlearning_rate = 3\n'
                    '[lora]\nr = 0\n[model]\nload_in_4bit = "maybe"\n')
    with pytest.raises(ConfigError) as e:
        C.resolve(path, {"data": {"path": "d.jsonl"}})
    text = str(e.value)
    assert "`train.max_seq_length`" in text and "did you mean `train.max_length`" in text
    assert "`train.batch_size` must be an integer" in text
    assert "`model.load_in_4bit` must be true or false" in text
    assert len(e.value.problems) == 3  # type problems first; value checks run once types are right


def test_value_problems_name_field_and_fix():
    cfg = C.RunConfig()
    cfg.train.learning_rate, cfg.lora.r, cfg.train.engine = 3.0, 0, "fast"
    with pytest.raises(ConfigError) as e:
        C.validate(cfg)
    text = str(e.value)
    for needle in ("`data.path` is empty", "`train.learning_rate` = 3.0", "`lora.r` = 0", "`train.engine` = 'fast'; set one of: auto, unsloth, hf"):
        assert needle in text


def test_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nmax_steps = 3\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        C.resolve(path)


@pytest.mark.parametrize("name", C.list_profiles())
def test_every_profile_loads_and_validates(name):
    """Like litgpt's test_config_hub: each preset is a partial override that yields a valid config."""
    from importlib import resources

    text = resources.files("edgetune.profiles").joinpath(f"{name}.toml").read_text()
    assert text.startswith("# Used by: edgetune train --profile"), "presets name the command that uses them"
    cfg = C.resolve(None, {"data": {"path": "d.jsonl"}}, profile=name)
    assert cfg.profile == name
    raw = tomllib.loads(text)
    for section, values in raw.items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value


def test_profiles_cover_the_promised_sizes():
    assert {"cpu", "gpu-6gb", "gpu-8gb", "gpu-12gb", "gpu-16gb", "gpu-24gb"} <= set(C.list_profiles())


def test_profile_for_hardware():
    from edgetune.hardware import Hardware, profile_for

    assert profile_for(Hardware("cpu")) == "cpu"
    assert profile_for(Hardware("cuda", vram_gb=7.6)) == "gpu-8gb"
    assert profile_for(Hardware("cuda", vram_gb=11.7)) == "gpu-12gb"
    assert profile_for(Hardware("cuda", vram_gb=80)) == "gpu-24gb"
    assert profile_for(Hardware("cuda", vram_gb=4)) == "gpu-6gb"


def test_unknown_profile():
    with pytest.raises(ConfigError, match="set one of: cpu"):
        C.resolve(None, {"data": {"path": "d"}}, profile="gpu-3gb")


def test_stage_tables_override_one_stage_only(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[data]\npath = "x.jsonl"\n[method]\nstages = ["sft", "grpo"]\n'
                 '[stage.grpo.train]\nmax_steps = 30\nlearning_rate = 1e-5\n[stage.grpo.method]\nrewards = ["json_valid"]\n')
    cfg = C.resolve(f, {"train": {"max_steps": 12}})
    grpo, sft = C.for_stage(cfg, "grpo"), C.for_stage(cfg, "sft")
    assert (grpo.train.max_steps, grpo.train.learning_rate, grpo.method.rewards) == (30, 1e-5, ["json_valid"])
    assert (sft.train.max_steps, sft.method.name, grpo.method.name) == (12, "sft", "grpo")
    again = tmp_path / "again.toml"
    cfg.save(again)
    assert C.resolve(again).stage == cfg.stage


@pytest.mark.parametrize("tables, expected", [
    ('[stage.grpo.train]\nmax_stepz = 3\n', "stage.grpo: unknown field `train.max_stepz` (did you mean `train.max_steps`?)"),
    ('[stage.dpo.train]\nmax_steps = 3\n', "add 'dpo' to `method.stages`"),
    ('[stage.orpo.train]\nmax_steps = 3\n', "`stage.orpo` is not a method"),
    ('[stage.grpo.model]\nref = "x"\n', "`stage.grpo.model` cannot differ between stages"),
    ('[stage.grpo.method]\nname = "dpo"\n', "`stage.grpo.method.name` cannot differ between stages"),
    ('[stage.grpo.train]\nmax_steps = -3\n', "[stage.grpo]: `train.max_steps` = -3"),
])
def test_bad_stage_tables_name_the_field(tmp_path, tables, expected):
    f = tmp_path / "run.toml"
    f.write_text('[data]\npath = "x.jsonl"\n[method]\nstages = ["sft", "grpo"]\n' + tables)
    with pytest.raises(ConfigError) as e:
        C.resolve(f)
    assert any(expected in p for p in e.value.problems), e.value.problems
