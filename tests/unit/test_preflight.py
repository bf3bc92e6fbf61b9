"""Pre-flight: whether a model can be exported is said before any training, and an export the run asks for but
cannot have stops `train` before the first step (not after an hour of training and a merge)."""
from __future__ import annotations

import time

import pytest

from edgetune import config as C
from edgetune import preflight
from edgetune.errors import ConfigError
from edgetune.events import Collect, Note, TrainStep
from edgetune.train import train
from families import FAMILIES, build_family, build_lfm2
from shared_data import write_chat_jsonl


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_exportable_to_gguf(name, tmp_path):
    model = build_family(name, tmp_path / name)
    support = preflight.export_support(preflight.model_config(str(model)))
    assert support.gguf is None, support.describe()
    assert support.model_type == FAMILIES[name].model_type


def test_unsupported_architecture_stops_training_before_the_first_step(tmp_path, tiny_tokenizer_dir):
    model = build_lfm2(tmp_path / "lfm2", tiny_tokenizer_dir)
    support = preflight.export_support(preflight.model_config(str(model)))
    assert support.gguf is not None and "lfm2" in support.gguf
    cfg = C.resolve(None, {"model": {"ref": str(model), "load_in_4bit": False},
                           "data": {"path": str(write_chat_jsonl(tmp_path))}, "run_dir": str(tmp_path / "run"),
                           "train": {"max_steps": 2}}, profile="cpu")
    events = Collect()
    started = time.time()
    with pytest.raises(ConfigError) as err:
        train(cfg, events)
    assert "`export.gguf` = ['q4_k_m']" in str(err.value) and "lfm2" in str(err.value)
    assert "export.gguf = []" in str(err.value)  # says what to set
    assert not events.of(TrainStep) and not (tmp_path / "run" / "checkpoints").exists()
    assert time.time() - started < 30  # refused at plan time, before any model weights were loaded
    assert any("GGUF no" in n.text for n in events.of(Note))

    # Asked for no GGUF, the same model trains (the user chose a merged checkpoint only)
    cfg.export.gguf = []
    cfg.lora.target_modules = ["q_proj", "v_proj"]  # LFM2's attention layers (its MLP is w1/w2/w3)
    assert train(cfg).steps == 2
