"""The streaming merge gives PEFT's merge_and_unload result (within 1e-6) for LoRA, rsLoRA and DoRA adapters on
4-bit (NF4, as QLoRA trained it) and 16-bit bases, and writes loadable sharded safetensors."""
import json

import pytest
import torch

from edgetune.engines.hf import bnb_config
from edgetune.merge_stream import quantized_weight_names, stream_merge
from edgetune.safetensors_io import ShardedWriter, checkpoint_index, read_tensor

ADAPTERS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}


def make_adapter(base_dir, out_dir, kind: str, four_bit: bool):
    """A LoRA adapter with random (non-zero) B and, for DoRA, magnitudes moved off the base norms."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs = {"quantization_config": bnb_config(torch.float32), "device_map": "cpu"} if four_bit else {}
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, **kwargs)
    torch.manual_seed(1)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                                           **ADAPTERS[kind]))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn_like(p))
    peft.save_pretrained(out_dir)
    return out_dir


def peft_reference(base_dir, adapter_dir, four_bit: bool) -> dict:
    """What merge.py did before streaming: load as trained, dequantize NF4 exactly, PEFT merge_and_unload."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    kwargs = {"quantization_config": bnb_config(torch.float32), "device_map": "cpu"} if four_bit else {}
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, **kwargs)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                lin = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(F.dequantize_4bit(child.weight.data, child.weight.quant_state).float())
                setattr(module, child_name, lin)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return {k: v.float() for k, v in merged.state_dict().items()}


@pytest.mark.parametrize("four_bit", [False, True], ids=["16bit-base", "4bit-base"])
@pytest.mark.parametrize("kind", list(ADAPTERS))
def test_streaming_merge_equals_peft(kind, four_bit, tmp_path):
    from families import build_family

    base = build_family("qwen3", tmp_path / "base")
    adapter = make_adapter(base, tmp_path / "adapter", kind, four_bit)
    out = tmp_path / "merged"
    out.mkdir()
    quantized = quantized_weight_names(base) if four_bit else set()
    stream_merge(base, adapter, out, torch.float32, quantized, torch.float32)
    expected = peft_reference(base, adapter, four_bit)
    got = {n: read_tensor(e) for n, e in checkpoint_index(out).items()}
    assert set(got) <= set(expected) and "model.layers.0.mlp.up_proj.weight" in got
    worst = max(float((got[n] - expected[n]).abs().max()) for n in got)
    assert worst <= 1e-6, worst
    if four_bit:  # the check means something: the NF4 rounding moved the base weights by far more than 1e-6
        plain = {n: read_tensor(e).float() for n, e in checkpoint_index(base).items()}
        assert float((plain["model.layers.0.mlp.up_proj.weight"] - got["model.layers.0.mlp.up_proj.weight"]).abs().max()) > 1e-3
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"


def test_quantized_weights_are_the_block_linears(tmp_path):
    from families import build_family

    names = quantized_weight_names(build_family("llama3_2", tmp_path / "m"))
    assert "model.layers.0.self_attn.q_proj.weight" in names and "model.layers.1.mlp.down_proj.weight" in names
    assert not any("embed" in n or "lm_head" in n or "norm" in n for n in names)


def test_sharded_writer_round_trips_through_transformers(tmp_path):
    """Shards + index that transformers loads; every tensor lands where planned, in row chunks too."""
    from families import build_family
    from transformers import AutoModelForCausalLM

    base = build_family("llama3_2", tmp_path / "m")
    index = checkpoint_index(base)
    out = tmp_path / "out"
    out.mkdir()
    writer = ShardedWriter(out, {n: ("BF16", e.shape) for n, e in index.items()}, shard_bytes=200_000)
    for name, entry in index.items():
        t = read_tensor(entry).to(torch.bfloat16)
        half = t.shape[0] // 2 if t.dim() and t.shape[0] > 1 else 0
        if half:
            writer.write(name, t[:half], row_offset=0)
            writer.write(name, t[half:], row_offset=half)
        else:
            writer.write(name, t)
    writer.close()
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    for f in ("config.json", "generation_config.json"):
        (out / f).write_text((base / f).read_text())
    a = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).state_dict()
    b = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_merge_check_sees_a_wrong_merge(kind, tmp_path, monkeypatch):
    """The merge check (saved model vs base as trained + unmerged adapter) is ~0 for a right merge and large for a
    merge with the wrong scale."""
    from families import build_family

    from edgetune import merge_stream
    from edgetune.merge import check_merge
    from edgetune.tokenizer import load_tokenizer

    base = build_family("qwen3", tmp_path / "base")
    adapter = make_adapter(base, tmp_path / "adapter", kind, four_bit=True)
    quantized = quantized_weight_names(base)
    tok = load_tokenizer(base)
    for name, scale in (("right", 1.0), ("wrong", 2.0)):
        out = tmp_path / name
        out.mkdir()
        real = merge_stream.read_adapter
        monkeypatch.setattr(merge_stream, "read_adapter", lambda d: {
            k: merge_stream.LoraDelta(v.a, v.b, v.scale * scale, v.magnitude) for k, v in real(d).items()})
        store = merge_stream.NF4Store(tmp_path / f"{name}-nf4")  # the check reuses the merge's 4-bit rounding
        stream_merge(base, adapter, out, torch.float32, quantized, torch.float32, store=store)
        monkeypatch.undo()
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (out / f).write_bytes((base / f).read_bytes())
        worst, _ = check_merge(base, adapter, out, tok, quantized, torch.float32, store=store)
        if name == "right":
            assert worst < 1e-4, worst
        else:
            assert worst > 0.1, worst


def test_nf4_store_returns_the_merges_rounding(tmp_path):
    """The merge check reads back exactly the weights the merge rounded (no second bitsandbytes quantization)."""
    from edgetune.merge_stream import NF4Store, nf4_roundtrip

    weight = torch.randn(96, 128)
    store = NF4Store(tmp_path / "nf4")
    rounded = nf4_roundtrip(weight, torch.bfloat16, store=store, name="model.layers.0.mlp.up_proj.weight")
    assert torch.equal(store.load("model.layers.0.mlp.up_proj.weight"), rounded)
    assert torch.equal(rounded, nf4_roundtrip(weight, torch.bfloat16))
    assert store.load("model.layers.0.mlp.down_proj.weight") is None
