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
