"""The ONNX decode path on the tiny model: SharedCache (one buffer bound as past and present) computes what the
copying session.run loop computes, generate uses it, and its logits stay valid after the next step."""
import numpy as np
import onnxruntime  # noqa: F401  (hard dependency: a missing one fails the run, never skips it)
import pytest
from edgetune.errors import ModelError
from edgetune.export.onnx_export import build_variant
from edgetune.export.onnx_runtime import OnnxModel

IDS = [5, 17, 42, 99, 7, 300, 12, 64, 128, 3, 250, 11]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("decode")
    return {v: build_variant(tiny_model_dir, root / v, v) for v in ("fp32", "int4")}


@pytest.mark.parametrize("variant", ["fp32", "int4"])
def test_shared_cache_gives_the_copying_cache_logits(folders, variant):
    model = OnnxModel(folders[variant])
    assert model.share_buffer  # the builder's GroupQueryAttention graphs say so in genai_config.json
    cache, past, kept = model.cache(len(IDS) + 1), model.empty_cache(), []
    for chunk in (IDS[:5], IDS[5:6], IDS[6:7], IDS[7:]):
        shared = cache.step(chunk)
        copied, past = model.forward(chunk, past)
        assert shared.shape == copied.shape and np.array_equal(shared, copied)
        kept.append((shared, copied))
    for shared, copied in kept:  # a returned array is the caller's: later steps do not write into it
        assert np.array_equal(shared, copied)
    with pytest.raises(ModelError, match="exceed"):
        cache.step([1, 2])


@pytest.mark.parametrize("variant", ["fp32", "int4"])
def test_generate_through_the_shared_cache_equals_the_copying_loop(folders, variant):
    model = OnnxModel(folders[variant])
    new = list(model.generate(IDS[:4], 6, temperature=0.0, repeat_penalty=1.1, eos_ids=set()))
    sampled = list(model.generate(IDS[:4], 6, temperature=0.8, repeat_penalty=1.1, eos_ids=set(), seed=3))
    model.share_buffer = False  # the session.run loop with the cache as numpy arrays
    assert new == list(model.generate(IDS[:4], 6, temperature=0.0, repeat_penalty=1.1, eos_ids=set()))
    assert sampled == list(model.generate(IDS[:4], 6, temperature=0.8, repeat_penalty=1.1, eos_ids=set(), seed=3))


@pytest.fixture(scope="module")
def unfused(folders):
    """The int4 default straight from ort_quantize (what the export rewrites with onnx_fuse.decode_layout; no run
    dir, so no calibration rows, as build_variant finds for the tiny model)."""
    from edgetune.export import onnx_int4

    fp32 = folders["fp32"]
    return onnx_int4.ort_quantize(fp32, fp32.parent / "unfused", onnx_int4.DEFAULT_INT4, [])


def _copy_with(src, dst, *rewrites):
    import shutil

    import onnx

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    counts = [rewrite(model) for rewrite in rewrites]
    (dst / "model.onnx.data").unlink()
    onnx.save_model(model, str(dst / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data")
    return counts


def _steps(model, ids):
    cache = model.cache(len(ids))
    return np.concatenate([cache.step([t]) for t in ids])


def test_fused_gate_up_of_the_offset_layout_computes_the_same_logits(folders, tmp_path):
    """g41_32_v8 (Q4_1-style offsets): one MatMulNBits for gate+up (levels, scales and offsets side by side) and a
    Split, bit-identical logits, full sequence and one token at a time; the offsets unpacked to [1, blocks, N] keep
    the full-sequence logits and change one-token steps by fp32 rounding only."""
    from edgetune.export import onnx_fuse, onnx_int4

    plain = onnx_int4.ort_quantize(folders["fp32"], tmp_path / "g41", "g41_32_v8", [])
    assert _copy_with(plain, tmp_path / "fused", onnx_fuse.fuse_gate_up) == [2]  # both layers
    old, new = OnnxModel(plain), OnnxModel(tmp_path / "fused")
    assert np.array_equal(old.logits(IDS), new.logits(IDS))
    assert np.array_equal(_steps(old, IDS), _steps(new, IDS))
    onnx_fuse.decode_layout(tmp_path / "fused")
    laid_out = OnnxModel(tmp_path / "fused")
    assert np.array_equal(old.logits(IDS), laid_out.logits(IDS))
    assert np.abs(_steps(old, IDS) - _steps(laid_out, IDS)).max() < 0.2  # test_onnx.py's int4 cached-step tolerance


def test_fused_gate_up_of_integer_zero_points_computes_the_same_logits(folders, tmp_path):
    """gz4_32_v8 (packed zero points, fp16 scales; up_proj 4-bit in both layers): gate+up as one MatMulNBits and a
    Split, bit-identical logits, full sequence and one token at a time."""
    from edgetune.export import onnx_fuse, onnx_int4

    plain = onnx_int4.ort_quantize(folders["fp32"], tmp_path / "gz", "gz4_32_v8", [])
    assert _copy_with(plain, tmp_path / "fused", onnx_fuse.fuse_gate_up_zp) == [2]  # both layers
    old, new = OnnxModel(plain), OnnxModel(tmp_path / "fused")
    assert np.array_equal(old.logits(IDS), new.logits(IDS))
    assert np.array_equal(_steps(old, IDS), _steps(new, IDS))


def test_decode_layout_is_what_the_export_writes(folders, unfused):
    """The exported int4 folder is ort_quantize's graph (default gz4_32_vmu) after decode_layout: gate/up fused
    wherever both are 4-bit (the default keeps the first and last layer's up_proj at 8 bits, so on the 2-layer tiny
    model none is), logits bit-identical to the unfused graph, full sequence and one token at a time."""
    import onnx

    nodes = onnx.load(str(folders["int4"] / "model.onnx"), load_external_data=False).graph
    names = [n.name for n in nodes.node if n.op_type == "MatMulNBits"]
    for gate in [n for n in names if "/gate_proj/" in n]:  # left unfused only where up_proj is 8-bit
        assert gate.replace("/gate_proj/", "/up_proj/") + "_Q8" in names, gate
    old, new = OnnxModel(unfused), OnnxModel(folders["int4"])
    assert np.array_equal(old.logits(IDS), new.logits(IDS))
    assert np.array_equal(_steps(old, IDS), _steps(new, IDS))
