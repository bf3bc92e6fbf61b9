"""Every runtime stops where the family's replies end: the stop ids (generation config list, eos, the template's
end-of-turn token) reach HF generation (chat's HF backend, eval, the training sample callback) and the Ollama
Modelfile. Gemma 3's tokenizer eos is <eos> while its turns end with <end_of_turn>: passing only eos_token_id made
replies run to max_tokens. (llama.cpp and ONNX stopping: test_gguf_families.py, test_family_onnx.py.)"""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from edgetune.callbacks import SampleCallback
from edgetune.chat import HFBackend
from edgetune.events import Collect, SampleGenerated
from edgetune.export.modelfile import write_modelfile
from edgetune.export.modelfile_template import derive, simulate
from edgetune.stops import stop_ids
from edgetune.tokenizer import load_tokenizer
from families import FAMILIES, build_family

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Now this."}, {"role": "user", "content": "Bye"}]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request, tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM

    name = request.param
    model_dir = build_family(name, tmp_path_factory.mktemp(name))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return name, model_dir, model, load_tokenizer(model_dir)


def forced_end_of_turn(model, tok, name):
    """Bias generation towards the family's end-of-turn token (a random model never picks it itself): the real
    generate path then produces it first, and must stop there."""
    eot = tok.convert_tokens_to_ids(FAMILIES[name].end_of_turn)
    model.generation_config.sequence_bias = {(eot,): 1000.0}
    return eot


def test_stop_ids_hold_the_generation_config_eos_and_the_end_of_turn(family_model):
    name, model_dir, model, tok = family_model
    ids = stop_ids(tok, model_dir)
    family = FAMILIES[name]
    assert {tok.convert_tokens_to_ids(t) for t in (*family.generation_eos, family.end_of_turn)} <= set(ids)
    assert stop_ids(tok, model=model) == ids  # the loaded model's generation config says the same


def test_hf_generation_stops_at_the_end_of_turn(family_model):
    name, _, model, tok = family_model
    backend = HFBackend(model, tok, repeat_penalty=1.0)
    free = "".join(backend.stream([{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0.0))
    assert backend.finish_reason == "length" and free  # the random model runs on...
    eot = forced_end_of_turn(model, tok, name)
    try:
        reply = "".join(backend.stream([{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0.0))
    finally:
        model.generation_config.sequence_bias = None
    assert (reply, backend.finish_reason) == ("", "stop"), eot  # ...until its end-of-turn token


def test_training_sample_stops_at_the_end_of_turn(family_model):
    name, _, model, tok = family_model
    events = Collect()
    callback = SampleCallback(events, tok, "Hi", every=1, max_new_tokens=6)
    forced_end_of_turn(model, tok, name)
    try:
        callback.on_step_end(None, SimpleNamespace(global_step=1), None, model=model)
    finally:
        model.generation_config.sequence_bias = None
    assert events.of(SampleGenerated)[0].text == ""


def test_modelfile_has_the_family_template_and_every_stop(family_model, tmp_path):
    name, model_dir, _, tok = family_model
    text = write_modelfile(tmp_path, "m.gguf", model_dir).read_text(encoding="utf-8")
    assert "did not recognise this model's chat template" not in text  # a real TEMPLATE for every family
    stops = re.findall(r'PARAMETER stop "(.*?)"', text)
    family = FAMILIES[name]
    assert {*family.generation_eos, family.end_of_turn} <= set(stops)
    pieces = derive(lambda m, g: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=g),
                    tok.bos_token, tok.eos_token)
    if "derived from the model's chat template" in text:  # checked again on a longer chat than derive's probes
        rendered = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
        assert simulate(pieces, CHAT) == (rendered[len(tok.bos_token):] if tok.bos_token and
                                          rendered.startswith(tok.bos_token) else rendered)
    else:
        assert name in ("qwen3", "qwen2", "smollm3", "llama3_2")  # ChatML and Llama 3: the hand-written templates
