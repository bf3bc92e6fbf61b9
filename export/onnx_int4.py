"""int4 ONNX recipes: onnxruntime-genai builder options, or onnxruntime's matmul_nbits_quantizer on the fp32 graph.

RESULTS_PLACEHOLDER
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .onnx_int8 import share_int8_embedding

# name -> builder extra options (onnxruntime-genai 0.18 names: algo_config default|rtn|k_quant (+ legacy aliases
# k_quant_last / k_quant_mixed), matmul_mixed_precision selector:type with selectors last_matmul / mixed_layers,
# block_size, accuracy_level, is_symmetric, shared_embeddings (defaults to the model's tie_word_embeddings))
BUILDER_RECIPES: dict[str, list[str]] = {
    "rtn32": ["block_size=32"],
    "rtn32_asym": ["block_size=32", "is_symmetric=false"],
    "kq_mixed32": ["algo_config=k_quant_mixed"],
    "kq_mixed32_acc1": ["algo_config=k_quant_mixed", "accuracy_level=1"],
    "kq_mixed32_acc0": ["algo_config=k_quant_mixed", "accuracy_level=0"],
    "kq_mixed64": ["algo_config=k_quant_mixed", "block_size=64"],
    "kq_mixed128": ["algo_config=k_quant_mixed", "block_size=128"],
    "kq_last32": ["algo_config=k_quant_last"],
    "kq32": ["algo_config=k_quant"],
    "kq32_asym": ["algo_config=k_quant", "is_symmetric=false"],
    "kq_last32_asym": ["algo_config=k_quant_last", "is_symmetric=false"],
    "kq_mixed32_asym": ["algo_config=k_quant_mixed", "is_symmetric=false"],
    "kq_mixed64_asym": ["algo_config=k_quant_mixed", "block_size=64", "is_symmetric=false"],
    "kq_mixed32_unshared": ["algo_config=k_quant_mixed", "shared_embeddings=false"],
}
# int8 for comparison: the builder's default (lm_head int8, embedding table fp32) and with the table shared
INT8_RECIPES: dict[str, list[str]] = {
    "int8": [],
    "int8_shared": ["shared_embeddings=true"],
    "int8_shared_acc1": ["shared_embeddings=true", "accuracy_level=1"],
}
# name -> (onnxruntime quantizer algorithm, block size, lm_head bits) applied to the builder's fp32 graph
ORT_RECIPES: dict[str, tuple[str, int, int]] = {
    "hqq32": ("HQQ", 32, 8),
    "hqq64": ("HQQ", 64, 8),
    "gptq32": ("GPTQ", 32, 8),
}
RECIPES = list(BUILDER_RECIPES) + list(ORT_RECIPES)
DEFAULT_INT4 = "kq_mixed32"


def builder_recipe(recipe: str) -> tuple[str, list[str]]:
    """(builder precision, extra options) of a builder recipe."""
    if recipe in INT8_RECIPES:
        return "int8", list(INT8_RECIPES[recipe])
    return "int4", list(BUILDER_RECIPES[recipe])


def ort_quantize(fp32_dir: Path, out_dir: Path, recipe: str, calibration: list[list[int]] | None = None) -> Path:
    """Quantize the fp32 folder's MatMuls to 4 bits with onnxruntime's HQQ or GPTQ (lm_head to 8 bits, symmetric),
    writing a complete model folder (genai_config.json and tokenizer files copied) at out_dir."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    algo, block, head_bits = ORT_RECIPES[recipe]
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32_dir / "model.onnx"))
    head = [n.name for n in model.graph.node if n.op_type == "MatMul" and "lm_head" in n.name]
    if algo == "HQQ":
        cfg = mnq.HQQWeightOnlyQuantConfig(block_size=block, bits=4, op_types_to_quantize=("MatMul",))
    else:
        reader = _Reader(calibration or [])
        inputs = {i.name: i for i in model.graph.input}
        key = inputs["past_key_values.0.key"].type.tensor_type.shape.dim
        layers = sum(1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key"))
        reader.spec = (layers, key[1].dim_value, key[3].dim_value, "position_ids" in inputs)
        cfg = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, op_types_to_quantize=("MatMul",))
    q = mnq.MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=False, accuracy_level=4,
                                 nodes_to_exclude=head, algo_config=cfg)
    q.process()
    model = q.model.model
    if head and head_bits:
        cfg8 = mnq.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=head_bits,
                                                op_types_to_quantize=("MatMul",))
        q8 = mnq.MatMulNBitsQuantizer(model, bits=head_bits, block_size=32, is_symmetric=True, accuracy_level=4,
                                      nodes_to_include=head, algo_config=cfg8)
        q8.process()
        model = q8.model.model
    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data")
    for item in fp32_dir.iterdir():
        if item.name not in ("model.onnx", "model.onnx.data"):
            shutil.copy2(item, out_dir / item.name)
    share_int8_embedding(out_dir)  # tied models: the embedding reads lm_head's int8 blocks, no fp32 table
    return out_dir


class _Reader:
    """Calibration rows as full-sequence inputs with an empty KV cache (GPTQ collects MatMul inputs from them)."""

    def __init__(self, rows: list[list[int]]):
        self.rows = list(rows)
        self.spec = None

    def get_next(self):
        import numpy as np

        if not self.rows:
            return None
        ids = self.rows.pop(0)
        feed = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        if self.spec:
            layers, heads, head_size, position = self.spec
            for i in range(layers):
                for kv in ("key", "value"):
                    feed[f"past_key_values.{i}.{kv}"] = np.zeros((1, heads, 0, head_size), np.float32)
            if position:
                feed["position_ids"] = np.arange(len(ids), dtype=np.int64)[None]
        return feed

    def rewind(self):
        pass

    def __iter__(self):  # GPTQ reads the reader as an iterable
        while (feed := self.get_next()) is not None:
            yield feed
