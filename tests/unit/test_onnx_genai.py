"""Exported ONNX folders run in onnxruntime-genai unchanged: og.Tokenizer gives the HF ids (also for the decoder that
edgetune's GGUF -> HF conversion writes, which og.Tokenizer misread as SentencePiece: -1 ids), genai_config.json lists
every stop id, og.Generator's greedy reply equals edgetune's decode loop, and verification reports both."""
import json
import shutil

import onnxruntime_genai as og  # hard dependency: a missing one fails the run, never skips it
import pytest

from edgetune.export.onnx_export import build_variant
from edgetune.export.onnx_genai import genai_greedy, genai_token_mismatches
from edgetune.export.onnx_runtime import OnnxBackend
from edgetune.export.verify import FIXED_TOKENIZER_TEXTS
from edgetune.tokenizer import load_tokenizer

# what export of a GGUF vocabulary to HF writes for byte-level BPE (SmolLM2 as embedded): no-op steps for byte-level
CONVERTER_DECODER = {"type": "Sequence", "decoders": [
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}


@pytest.fixture(scope="module")
def converted_model(tmp_path_factory, tiny_model_dir):
    """The tiny model with the converter-style decoder in its tokenizer.json."""
    folder = tmp_path_factory.mktemp("converted") / "model"
    shutil.copytree(tiny_model_dir, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["decoder"] = CONVERTER_DECODER
    (folder / "tokenizer.json").write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory, converted_model):
    return build_variant(converted_model, tmp_path_factory.mktemp("genai") / "fp32", "fp32")


def plain_ids(tokenizer):
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def test_genai_misreads_the_converter_decoder_without_the_fix(converted_model, exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    shutil.copy2(converted_model / "tokenizer.json", broken / "tokenizer.json")
    mismatches = genai_token_mismatches(broken, FIXED_TOKENIZER_TEXTS, plain_ids(load_tokenizer(converted_model)))
    assert mismatches and any(-1 in m["genai"] for m in mismatches)  # the bug the fix is for


def test_genai_tokenizer_ids_equal_hf(converted_model, exported):
    hf = load_tokenizer(converted_model)
    assert genai_token_mismatches(exported, FIXED_TOKENIZER_TEXTS, plain_ids(hf)) == []
    ours = load_tokenizer(exported)  # the rewritten file still gives transformers the same ids and text
    for text in FIXED_TOKENIZER_TEXTS:
        ids = plain_ids(hf)(text)
        assert plain_ids(ours)(text) == ids and ours.decode(ids) == hf.decode(ids)


def test_tokenizer_json_ships_compact_and_otherwise_unchanged(tiny_model_dir, exported):
    """No indentation in the folder's copy; the JSON is the original but for the decoder fix, where one applies."""
    from edgetune.export.onnx_genai import _BYTE_LEVEL_DECODER, genai_tokenizer_json

    assert "\n" not in (exported / "tokenizer.json").read_text(encoding="utf-8")
    plain = exported.parent / "plain"
    plain.mkdir()
    original = json.loads((tiny_model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    (plain / "tokenizer.json").write_text(json.dumps(original, indent=2), encoding="utf-8")
    changed = genai_tokenizer_json(plain)
    after = json.loads((plain / "tokenizer.json").read_text(encoding="utf-8"))
    assert after == ({**original, "decoder": _BYTE_LEVEL_DECODER} if changed else original)


def test_genai_config_lists_every_stop_id_and_chat_template_works(exported):
    backend = OnnxBackend(exported)
    eos = json.loads((exported / "genai_config.json").read_text())["model"]["eos_token_id"]
    assert set(backend.eos_ids) <= set(eos if isinstance(eos, list) else [eos])
    tokenizer = og.Tokenizer(og.Model(str(exported)))
    messages = [{"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    assert [int(i) for i in tokenizer.encode(text)] == backend.prompt_ids(messages)


def test_genai_generator_greedy_equals_edgetune_loop(exported):
    backend = OnnxBackend(exported)
    ids = backend.prompt_ids([{"role": "user", "content": "Hi"}])
    ours = list(backend.model.generate(ids, 12, 0.0, 1.0, backend.eos_ids))
    assert list(genai_greedy(exported, ids, 12)) == ours
    backend.repeat_penalty = 1.0  # chat's greedy path without penalty is og.Generator, with the same reply
    assert backend.tokens(ids, 12, 0.0) is not None and list(backend.tokens(ids, 12, 0.0)) == ours
    assert backend._genai is not None


def test_verification_reports_genai(exported, converted_model):
    from edgetune.export.onnx_verify import verify_variants
    from edgetune.export.verify import GENERIC_TEXTS, HFReference

    [r] = verify_variants(None, {"fp32": exported}, ref=HFReference(converted_model), texts=GENERIC_TEXTS[:1],
                          chat_prompts=["Hi"])
    assert r["genai_token_ids_identical"] and r["genai_greedy_identical"] and not r["fidelity_failures"]
