"""Model references: local dirs, .gguf files, hub ids (offline cache), and refusal of pickles and remote code."""
import json

import pytest

from edgetune.errors import ModelError
from edgetune.models import HUB_ID, resolve


def test_local_dir(tiny_model_dir):
    r = resolve(str(tiny_model_dir))
    assert r.kind == "local" and r.path == str(tiny_model_dir.resolve())


def test_local_dir_without_safetensors_is_refused(tmp_path, tiny_model_dir):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="no \\*.safetensors") as e:
        resolve(str(d))
    assert "safetensors only" in e.value.hint


def test_remote_code_needs_the_flag(tmp_path, tiny_model_dir):
    d = tmp_path / "custom"
    d.mkdir()
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    cfg.update(model_type="my_custom_arch", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="needs the repo's own Python code") as e:
        resolve(str(d))
    assert "--trust-remote-code" in e.value.hint
    resolve(str(d), trust_remote_code=True)  # accepted when asked


def test_hub_id_offline_and_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match="not in the Hugging Face cache") as e:
        resolve("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert "hf download" in e.value.hint


def test_hub_id_found_in_offline_cache(monkeypatch, tmp_path, tiny_model_dir):
    """A hub id that is in the local HF cache resolves offline to the hub id (ordinary from_pretrained loading)."""
    cache = tmp_path / "cache"
    snap = cache / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    r = resolve("org/tiny")
    assert r.kind == "hub" and r.path == "org/tiny"
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained("org/tiny", cache_dir=str(cache)).hidden_size == 64


@pytest.mark.parametrize("ref", ["not a model", "./missing-dir", "/abs/missing/dir", "a/b/c"])
def test_nonsense_refs(ref):
    with pytest.raises(ModelError):
        resolve(ref)


def test_missing_gguf(tmp_path):
    with pytest.raises(ModelError, match="no such GGUF"):
        resolve(str(tmp_path / "x.gguf"))


def test_hub_id_pattern():
    assert HUB_ID.match("Qwen/Qwen2.5-0.5B-Instruct") and not HUB_ID.match("just-a-name")


@pytest.mark.integration
def test_default_is_the_embedded_smollm2(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(smollm2_dir)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert cfg.model_type == "llama" and cfg.hidden_size == 576
    assert tok.eos_token == "<|im_end|>", "EOS must come from the GGUF metadata, not transformers' guess"
    assert "<|im_start|>" in tok.chat_template
    again = resolve("default")
    assert again.path == str(smollm2_dir) and again.kind == "default"
