"""GPTQ for the offset layout (export/onnx_gptq.py): on correlated inputs it keeps x @ W closer than rounding each
weight alone, its output is the layout quantize_blocks_offset writes, and its recipe runs in onnxruntime."""
import numpy as np
import onnxruntime  # noqa: F401  (hard dependency: a missing one fails the run, never skips it)
import pytest
from edgetune.export import onnx_gptq, onnx_int4, onnx_iquant
from edgetune.export.onnx_export import build_variant
from edgetune.export.onnx_runtime import OnnxModel

IDS = [5, 17, 42, 99, 7, 300, 12, 64, 128, 3, 250, 11]
ROWS = [[3, 9, 27, 81, 243, 100, 200, 50], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], IDS]


def correlated(k: int, tokens: int, rng, seed: int = 7) -> np.ndarray:
    """Activations whose features are mixed (as hidden states are), with a few loud columns; the mixing depends on
    seed only, so rng draws more tokens of the same distribution."""
    fixed = np.random.default_rng(seed)
    mix = np.eye(k) + 2.0 * fixed.standard_normal((k, k)) / np.sqrt(k)
    loud = fixed.choice(k, 4, replace=False)
    x = rng.standard_normal((tokens, k)) @ mix
    x[:, loud] *= 8.0
    return x


def _rounded_alone(w, importance, grid):
    if grid == "zp":
        return onnx_iquant.dequantize(*onnx_iquant.quantize_blocks(w, importance), len(w))
    return onnx_iquant.dequantize_offset(*onnx_iquant.quantize_blocks_offset(w, importance))


@pytest.mark.parametrize("grid", ["offset", "zp"])
def test_gptq_beats_rounding_alone_on_the_output(grid):
    rng = np.random.default_rng(0)
    k, n = 128, 48
    x = correlated(k, 2048, rng)
    w = rng.standard_normal((k, n)) * 0.05
    gram = x.T @ x / len(x)
    held_out = correlated(k, 512, np.random.default_rng(1))
    levels, scales, points = onnx_gptq.quantize_gptq(w, gram, grid=grid)
    assert levels.max() <= 15 and (scales.astype(np.float16).astype(np.float32) == scales).all()  # fp16 on disk
    if grid == "zp":
        assert points.dtype == np.uint8 and points.max() <= 15
        gptq = onnx_iquant.dequantize(levels, scales, points, k)
    else:
        gptq = onnx_iquant.dequantize_offset(levels, scales, points)
    err_alone = np.linalg.norm(held_out @ (_rounded_alone(w, np.diag(gram), grid) - w))
    err_gptq = np.linalg.norm(held_out @ (gptq - w))
    assert err_gptq < 0.8 * err_alone, (err_gptq, err_alone)


def test_output_is_the_offset_layout():
    rng = np.random.default_rng(2)
    k, n = 64, 16
    x = correlated(k, 256, rng)
    w = rng.standard_normal((k, n))
    levels, scales, offsets = onnx_gptq.quantize_gptq(w, x.T @ x / len(x))
    assert levels.shape == (n, 2, 32) and levels.dtype == np.uint8 and levels.max() <= 15
    assert scales.shape == offsets.shape == (n, 2) and offsets.dtype == np.int8
    assert (scales.astype(np.float16).astype(np.float32) == scales).all()  # exact after fp16_scales
    assert np.abs(onnx_iquant.dequantize_offset(levels, scales, offsets) - w).max() < 4 * scales.max()


def test_dead_inputs_are_pinned_not_nan():
    gram = np.diag([1.0, 0.0, 2.0, 0.0] * 8)
    levels, scales, _ = onnx_gptq.quantize_gptq(np.ones((32, 3)), gram)
    assert np.isfinite(scales).all() and levels.shape == (3, 1, 32)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory, tiny_model_dir):
    return build_variant(tiny_model_dir, tmp_path_factory.mktemp("gptq") / "fp32", "fp32")


def test_gram_diagonal_is_the_importance(fp32_dir):
    grams = onnx_gptq.collect_gram(fp32_dir, ROWS)
    importance = onnx_iquant.collect_importance(fp32_dir, ROWS)
    assert set(grams) == set(importance)
    for name, gram in grams.items():
        np.testing.assert_allclose(np.diag(gram), importance[name], rtol=1e-5)
        np.testing.assert_allclose(gram, gram.T)


@pytest.mark.parametrize("recipe", ["g41_32_v8", "gz4_32_v8"])
def test_recipe_runs_in_onnxruntime_close_to_fp32(fp32_dir, recipe):
    out = onnx_int4.ort_quantize(fp32_dir, fp32_dir.parent / recipe, recipe, ROWS)
    ref = OnnxModel(fp32_dir).logits(IDS)
    ours = OnnxModel(out).logits(IDS)
    assert ours.shape == ref.shape and np.isfinite(ours).all()
    assert np.abs(ours - ref).max() < 0.2  # the tolerance test_onnx.py gives the builder's int4


def test_grams_in_passes_under_a_budget_are_the_one_pass_grams(fp32_dir):
    import onnx

    model = onnx.load(str(fp32_dir / "model.onnx"), load_external_data=False)
    order = onnx_gptq.matmul_order(model, set())
    whole = onnx_gptq.collect_gram(fp32_dir, ROWS)
    notes = []
    grams = onnx_gptq.Grams(fp32_dir, ROWS, order, budget=1, progress=notes.append)  # one input per pass
    for name, _ in order:
        np.testing.assert_allclose(grams.get(name), whole[name], rtol=1e-5, atol=1e-7)
    assert grams.passes == len(whole) == len(notes) and "calibration pass 1" in notes[0]
    assert onnx_gptq.Grams(fp32_dir, [], order, budget=1).get(order[0][0]) is None  # no rows: plain rounding


def test_inverse_factor_is_the_upper_cholesky_of_the_damped_inverse():
    gram = np.cov(np.random.default_rng(0).standard_normal((500, 64)).T)
    u = onnx_gptq.inverse_factor(gram, damp=0.01)
    damped = gram + 0.01 * np.mean(np.diag(gram)) * np.eye(64)
    assert np.allclose(u, np.triu(u))
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(damped), atol=1e-5)
