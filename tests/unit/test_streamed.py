"""The layer-streamed forward gives the loaded model's logits for every family, holding one block at a time."""
import pytest
import torch

from edgetune.streamed import StreamedCausalLM

FAMILIES = ["qwen3", "llama3_2", "gemma3", "phi4_mini", "smollm3", "mistral"]


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_logits_equal_the_loaded_model(family, tmp_path, monkeypatch):
    """Also with the output layer applied in slices of 100-400 vocab rows, and from a bf16 checkpoint (the embedding
    table kept in bf16, its lookups cast to fp32)."""
    from families import build_family
    from transformers import AutoModelForCausalLM

    from edgetune import streamed as S

    monkeypatch.setattr(S, "HEAD_BYTES", 4 * 100 * 256)
    model_dir = build_family(family, tmp_path / family)
    if family in ("llama3_2", "gemma3"):
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).save_pretrained(model_dir)
    ids = torch.randint(3, 200, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0  # right padding: positions before it are unaffected
    full = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = full(input_ids=ids, attention_mask=mask).logits
    streamed = StreamedCausalLM(model_dir)
    got = streamed(ids, mask).logits
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1, :30], want[1, :30], atol=1e-5)
    # weights are dropped after use: nothing but meta parameters remains
    assert all(p.device.type == "meta" for p in streamed.model.parameters())
