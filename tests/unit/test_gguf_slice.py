"""The F16 check in bounded memory (export/gguf_slice.py): a layer slice through llama.cpp against transformers running
the same layers, plus a byte check of every tensor. Deeper tiny checkpoints than the families tests, so the slice
really leaves layers out, and for Gemma 3 / SmolLM3 covers their per-layer patterns."""
from __future__ import annotations

import json
import shutil

import gguf
import pytest

from edgetune.errors import ExportError
from edgetune.export import verify
from edgetune.export.gguf_convert import convert
from edgetune.export.gguf_slice import slice_file_bytes, slice_layers, use_slice, verify_f16_sliced, write_slice
from families import build_family

DEPTHS = {"llama3_2": (6, {}), "gemma3": (8, {}), "smollm3": (8, {"no_rope_layers": [1, 1, 1, 0] * 2})}
EXPECTED_K = {"llama3_2": 2, "gemma3": 6, "smollm3": 4}
TEXTS = verify.GENERIC_TEXTS[:3]


@pytest.fixture(scope="module", params=sorted(DEPTHS))
def deep(request, tmp_path_factory):
    name = request.param
    layers, extra = DEPTHS[name]
    root = tmp_path_factory.mktemp(name)
    model = build_family(name, root / "hf", num_hidden_layers=layers, **extra)
    return name, model, convert(model, root / f"{name}.F16.gguf", "f16")


def test_slice_layers_follow_the_per_layer_patterns():
    assert slice_layers({"model_type": "llama", "num_hidden_layers": 28}) == 2
    gemma = {"model_type": "gemma3_text", "num_hidden_layers": 26,
             "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 4 + ["sliding_attention"] * 2}
    assert slice_layers(gemma) == 6
    assert slice_layers({"model_type": "gemma3_text", "num_hidden_layers": 26, "sliding_window_pattern": 6}) == 6
    assert slice_layers({"model_type": "smollm3", "num_hidden_layers": 36, "no_rope_layers": [1, 1, 1, 0] * 9}) == 4
    assert slice_layers({"model_type": "qwen3", "num_hidden_layers": 36, "layer_types": ["full_attention"] * 36}) == 2
    assert slice_layers({"model_type": "llama", "num_hidden_layers": 1}) == 1


def test_auto_slices_big_files_only():
    llama = {"model_type": "llama", "num_hidden_layers": 16}
    assert use_slice("sliced", 1, llama) and not use_slice("full", 10 * 1024**3, llama)
    assert not use_slice("auto", 100 * 1024**2, llama)
    assert use_slice("auto", int(2.5e9), llama) and use_slice("auto", int(6.4e9), llama)  # Llama 3.2 1B, 3B F16
    # the slice would be the whole model (2 layers; a pattern that never repeats): checked whole, whatever is asked
    assert not use_slice("sliced", 10 * 1024**3, {"model_type": "llama", "num_hidden_layers": 2})
    hybrid = {"model_type": "lfm2", "num_hidden_layers": 4, "layer_types": ["conv", "conv", "full_attention", "full_attention"]}
    assert not use_slice("sliced", 10 * 1024**3, hybrid)


def test_the_disk_plan_counts_the_slice():
    """Llama 3.2 3B: 128256 x 3072 tied embeddings and 2 of 28 layers, in 16 bits; nothing when checked whole."""
    config = {"model_type": "llama", "num_hidden_layers": 28, "vocab_size": 128256, "hidden_size": 3072,
              "tie_word_embeddings": True}
    n = 3_212_749_824
    embed = 128256 * 3072
    assert slice_file_bytes(config, n, "auto") == 2 * (embed + (n - embed) * 2 // 28)  # ~1.2 GB
    assert slice_file_bytes(config, n, "full") == 0


def test_sliced_check_passes_and_runs_each_kind_of_layer(deep, tmp_path):
    name, model, f16 = deep
    k = EXPECTED_K[name]
    piece = write_slice(f16, tmp_path / "piece.gguf", k)
    reader = gguf.GGUFReader(piece)
    arch = reader.get_field("general.architecture").contents()
    assert reader.get_field(f"{arch}.block_count").contents() == k
    assert {int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")} == set(range(k))

    result = verify_f16_sliced(f16, model, TEXTS, tmp_path)
    assert result["passed"], result["failures"]
    assert result["check"] == {"method": "layer slice", "layers": k, "of_layers": DEPTHS[name][0],
                               "tensors_compared": len(gguf.GGUFReader(f16).tensors), "tensor_mismatches": []}
    assert result["mean_kld"] <= verify.MAX_MEAN_KLD["f16"] and result["token_ids_identical"]
    assert result["file"] == f16.name and result["size_bytes"] == f16.stat().st_size
    assert result["stops_at_eos"] is None  # the chat check is left to the quantized files
    assert not list(f16.parent.glob(".*slice*"))  # the slice is removed


def test_a_changed_layer_outside_the_slice_fails_the_gate(deep, tmp_path):
    name, model, f16 = deep
    bad = shutil.copy(f16, tmp_path / f16.name)
    last = DEPTHS[name][0] - 1
    tensor = next(t for t in gguf.GGUFReader(bad).tensors if t.name == f"blk.{last}.ffn_down.weight")
    with open(bad, "r+b") as f:  # one weight of the last layer, which the slice never runs
        f.seek(tensor.data_offset + 10)
        f.write(b"\x00\x3c")  # fp16 1.0
    result = verify_f16_sliced(bad, model, TEXTS, tmp_path)
    assert not result["passed"]
    assert result["check"]["tensor_mismatches"] == [f"blk.{last}.ffn_down.weight"]
    assert "differ from the converter's output" in result["failures"][0]
    with pytest.raises(ExportError, match="does not behave like the merged model"):
        verify.check_gate(result)


def test_a_wrong_hyperparameter_is_caught_by_the_slice(tmp_path):
    """When the GGUF's metadata and the model disagree (here RoPE's base frequency, 500000 vs 10000), the slice's
    logits show it, as the whole file's would."""
    model = build_family("llama3_2", tmp_path / "hf", num_hidden_layers=6)
    f16 = convert(model, tmp_path / "m.F16.gguf", "f16")
    config = json.loads((model / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] = 10000.0
    wrong = shutil.copytree(model, tmp_path / "wrong")
    (wrong / "config.json").write_text(json.dumps(config))
    result = verify_f16_sliced(f16, wrong, TEXTS, tmp_path)
    assert not result["passed"] and result["mean_kld"] > verify.MAX_MEAN_KLD["f16"]


def test_export_checks_the_f16_by_slice_when_asked(tmp_path):
    """Through `export_gguf`: export.f16_check = sliced gives the F16 row a layer-slice check (its chat check runs on
    the quantized file), the disk plan names the slice, report.md says how the F16 was checked, and no slice file is
    left behind."""
    from edgetune import config as C
    from edgetune.events import Collect, Note
    from edgetune.export.gguf_export import export_gguf
    from shared_data import write_chat_jsonl

    model = build_family("llama3_2", tmp_path / "hf", num_hidden_layers=6)
    run = tmp_path / "run"
    cfg = C.resolve(None, {"model": {"ref": str(model), "load_in_4bit": False},
                           "data": {"path": str(write_chat_jsonl(tmp_path))}, "run_dir": str(run), "name": "deep",
                           "export": {"f16_check": "sliced"}}, profile="cpu")
    run.mkdir()
    cfg.save(run / "config.toml")
    shutil.copytree(model, run / "merged")
    events = Collect()
    result = export_gguf(run, ["q8_0"], sink=events, imatrix=False)
    f16 = next(r for r in result.results if r["type"] == "f16")
    assert f16["check"]["method"] == "layer slice" and f16["check"]["layers"] == 2 and f16["passed"]
    q8 = next(r for r in result.results if r["type"] == "q8_0")
    assert len(q8["finish_reasons"]) == 3 and f16["finish_reasons"] == []  # the chat check runs on the quantized file
    assert any("F16 layer slice" in n.text for n in events.of(Note))  # the disk plan
    assert "was checked in bounded memory: its first 2 of 6 layers" in (run / "report.md").read_text()
    assert not list((run / "gguf").glob(".*"))
