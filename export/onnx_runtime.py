"""Run an exported ONNX decoder with plain onnxruntime (no PyTorch): full-sequence logits, KV-cache generation, chat.

The model folder is what `export_onnx` writes (RUN_DIR/onnx/<variant>/): model.onnx (+ model.onnx.data), the
builder's genai_config.json (layer/head sizes, context length, EOS ids) and the HF tokenizer files with the chat
template. The graph's inputs are input_ids, attention_mask, past_key_values.{i}.key/value and, in some variants,
position_ids; outputs are logits and present.{i}.key/value. onnxruntime-genai runs the same folder unchanged
(export/onnx_genai.py makes it so).

Chat decodes with onnxruntime_genai.Generator where it does what edgetune's chat does: greedy without a repeat
penalty (verification checks that its tokens equal this module's loop). The hand-written loop here stays for what
og.Generator does not do: llama.cpp's repeat penalty (over the last 64 *generated* tokens, the prompt not penalised,
so ONNX and GGUF replies stay comparable; genai's repetition_penalty is transformers' kind, over prompt and reply),
temperature sampling from the full distribution with edgetune's seed, and next-token logits at every position of a
text in one pass (verification and eval compare those; og.Generator hands out the last position's).

Decoding keeps the cache in place where the graph allows it (SharedCache): the builder's GroupQueryAttention graphs
(genai_config's search.past_present_share_buffer) append each step's keys and values into a preallocated buffer bound
as both past and present, as llama.cpp and og.Generator do, instead of copying the whole cache into new arrays every
token; the logits are identical (benchmarks/deploy.py --onnx-decode run,shared times both).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from edgetune.sampling import REPEAT_PENALTY
from edgetune.errors import ModelError

# llama.cpp's penalty window: its sampler only accepts sampled tokens, so the prompt is never penalised. Matching
# it makes ONNX and GGUF replies comparable.
REPEAT_LAST_N = 64
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _usable_cpus() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxModel:
    """One onnxruntime session over an exported decoder; batch 1, KV cache kept as numpy arrays between calls."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        model_file = self.dir / "model.onnx" if path.is_dir() else path
        if not model_file.is_file():
            raise ModelError(f"{self.dir}: no model.onnx here", hint="export one with `edgetune export RUN_DIR --onnx fp32`")
        cfg_path = self.dir / "genai_config.json"
        self.config = json.loads(cfg_path.read_text(encoding="utf-8"))["model"] if cfg_path.is_file() else {}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or _usable_cpus()
        opts.log_severity_level = 3  # onnxruntime warns about unused initializers etc. on every load
        try:
            self.session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"{model_file}: onnxruntime could not load this model ({e})",
                             hint="re-export it with `edgetune export RUN_DIR --onnx ...`") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = set(inputs)
        self.n_layers = sum(1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key"))
        key = inputs["past_key_values.0.key"]
        self.kv_dtype = _DTYPES[key.type]
        self.kv_heads = int(key.shape[1])
        decoder = self.config.get("decoder", {})
        self.head_size = int(decoder.get("head_size") or self._head_size_from_outputs())
        self.context_length = int(self.config.get("context_length") or 0) or None
        self.output_names = [o.name for o in self.session.get_outputs()]
        eos = self.config.get("eos_token_id")
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        search = json.loads(cfg_path.read_text(encoding="utf-8")).get("search", {}) if cfg_path.is_file() else {}
        # the builder sets it where attention is GroupQueryAttention, which appends in place into a shared buffer
        self.share_buffer = bool(search.get("past_present_share_buffer"))

    def _head_size_from_outputs(self) -> int:
        shape = next(o.shape for o in self.session.get_outputs() if o.name == "present.0.key")
        if not isinstance(shape[-1], int):
            raise ModelError(f"{self.dir}: cannot tell the attention head size (no genai_config.json)",
                             hint="re-export the model with `edgetune export`")
        return shape[-1]

    def empty_cache(self) -> list[np.ndarray]:
        return [np.zeros((1, self.kv_heads, 0, self.head_size), self.kv_dtype) for _ in range(2 * self.n_layers)]

    def forward(self, ids: list[int], past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [len(ids), V] (float32) for `ids` after the cached `past`, and the new cache."""
        start = past[0].shape[2]
        total = start + len(ids)
        if self.context_length and total > self.context_length:
            raise ModelError(f"{total} tokens exceed the model's context of {self.context_length}",
                             hint="shorten the prompt or lower max_tokens")
        feed = {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, total), np.int64)}
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.arange(start, total, dtype=np.int64)[None]
        for i in range(self.n_layers):
            feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = past[2 * i], past[2 * i + 1]
        out = dict(zip(self.output_names, self.session.run(None, feed)))
        present = [out[f"present.{i}.{kv}"] for i in range(self.n_layers) for kv in ("key", "value")]
        return out["logits"][0].astype(np.float32), present

    def cache(self, max_len: int) -> "SharedCache | None":
        """An in-place KV cache for up to max_len tokens, or None where the graph cannot share past and present."""
        return SharedCache(self, max_len) if self.share_buffer else None

    def logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits at every position of `ids` (one pass, empty cache): [T, V]."""
        return self.forward(list(ids), self.empty_cache())[0]

    def generate(self, ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                 repeat_penalty: float = REPEAT_PENALTY, eos_ids: set[int] | None = None,
                 seed: int = 0) -> Iterator[int]:
        """Yield new token ids (prompt once, then one token per step through the KV cache); stops after an EOS id,
        which is yielded so callers can tell `stop` from `length`."""
        eos_ids = self.eos_ids if eos_ids is None else eos_ids
        rng = np.random.default_rng(seed)
        generated: list[int] = []
        total = len(ids) + max_new_tokens
        cache = self.cache(min(total, self.context_length) if self.context_length else total)
        if cache is not None:
            logits = cache.step(list(ids))
        else:
            logits, past = self.forward(list(ids), self.empty_cache())
        for _ in range(max_new_tokens):
            token = pick_token(logits[-1], generated, temperature, repeat_penalty, rng)
            yield token
            if token in eos_ids:
                return
            generated.append(token)
            if self.context_length and len(ids) + len(generated) >= self.context_length:
                return
            if cache is not None:
                logits = cache.step([token])
            else:
                logits, past = self.forward([token], past)


class SharedCache:
    """One sequence's KV cache in preallocated [1, kv_heads, max_len, head_size] buffers, bound through onnxruntime's
    IO binding as both past_key_values.* and present.*: GroupQueryAttention sees the same tensor on both sides and
    writes the new positions in place (seqlens_k and total_sequence_length come from attention_mask's sum and length,
    so the mask covers the valid positions only). A one-token step writes its logits into a preallocated buffer."""

    def __init__(self, model: OnnxModel, max_len: int):
        import onnxruntime as ort

        self.model, self.max_len, self.length = model, max_len, 0
        shape = (1, model.kv_heads, max_len, model.head_size)
        self.buffers = [ort.OrtValue.ortvalue_from_shape_and_type(shape, model.kv_dtype, "cpu")
                        for _ in range(2 * model.n_layers)]
        self.binding = model.session.io_binding()
        self.binding.bind_output("logits", "cpu")  # bound first: get_outputs()[0] (a rebinding keeps its place)
        for i in range(model.n_layers):
            for j, kv in enumerate(("key", "value")):
                self.binding.bind_ortvalue_input(f"past_key_values.{i}.{kv}", self.buffers[2 * i + j])
                self.binding.bind_ortvalue_output(f"present.{i}.{kv}", self.buffers[2 * i + j])
        self.mask = np.ones((1, max_len), np.int64)
        spec = next(o for o in model.session.get_outputs() if o.name == "logits")
        self.step_logits = ort.OrtValue.ortvalue_from_shape_and_type((1, 1, int(spec.shape[-1])), _DTYPES[spec.type],
                                                                     "cpu")
        self._fed: list[np.ndarray] = []  # bound inputs stay alive until the run

    def step(self, ids: list[int]) -> np.ndarray:
        """Logits [len(ids), V] (float32) for `ids` after the cached positions; the cache grows in place."""
        start, total = self.length, self.length + len(ids)
        if total > self.max_len:
            raise ModelError(f"{total} tokens exceed this cache's {self.max_len} (the model's context is "
                             f"{self.model.context_length})", hint="shorten the prompt or lower max_tokens")
        self._fed = [np.asarray([ids], dtype=np.int64), self.mask[:, :total]]
        self.binding.bind_cpu_input("input_ids", self._fed[0])
        self.binding.bind_cpu_input("attention_mask", self._fed[1])
        if "position_ids" in self.model.input_names:
            self._fed.append(np.arange(start, total, dtype=np.int64)[None])
            self.binding.bind_cpu_input("position_ids", self._fed[2])
        if len(ids) == 1:
            self.binding.bind_ortvalue_output("logits", self.step_logits)
        else:
            self.binding.bind_output("logits", "cpu")
        self.model.session.run_with_iobinding(self.binding)
        self.length = total
        out = self.step_logits if len(ids) == 1 else self.binding.get_outputs()[0]
        return np.array(out.numpy()[0], dtype=np.float32)  # a copy: numpy() views the buffer the next step rewrites


def pick_token(logits: np.ndarray, history: list[int], temperature: float, repeat_penalty: float, rng) -> int:
    """llama.cpp-style repeat penalty over the last REPEAT_LAST_N generated tokens, then greedy or temperature."""
    row = logits.astype(np.float64)
    if repeat_penalty and repeat_penalty != 1.0 and history:
        seen = np.unique(np.asarray(history[-REPEAT_LAST_N:]))
        vals = row[seen]
        row[seen] = np.where(vals > 0, vals / repeat_penalty, vals * repeat_penalty)
    if temperature <= 0:
        return int(row.argmax())
    row = (row - row.max()) / temperature
    p = np.exp(row)
    return int(rng.choice(len(p), p=p / p.sum()))


class OnnxBackend:
    """The chat Backend protocol on an exported ONNX folder; `tokenizer` and `model.logits` also serve eval."""

    name = "onnx"

    def __init__(self, path: Path, repeat_penalty: float = REPEAT_PENALTY, tokenizer_dir: Path | None = None):
        from edgetune.tokenizer import load_tokenizer

        self.model = OnnxModel(path)
        self.repeat_penalty = repeat_penalty
        self.tokenizer = load_tokenizer(tokenizer_dir or self.model.dir)
        from edgetune.stops import stop_ids

        self.eos_ids = set(self.model.eos_ids) | set(stop_ids(self.tokenizer, self.model.dir))
        self.finish_reason = "stop"
        self._genai = None  # og.Model, loaded on first greedy reply without repeat penalty

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(enc["input_ids"])

    def tokens(self, ids: list[int], max_tokens: int, temperature: float) -> Iterator[int]:
        """New token ids: og.Generator for greedy without repeat penalty, else the hand-written loop."""
        if temperature <= 0 and (not self.repeat_penalty or self.repeat_penalty == 1.0):
            from .onnx_genai import genai_greedy

            if self._genai is None:
                import onnxruntime_genai as og

                self._genai = og.Model(str(self.model.dir))
            room = (self.model.context_length or len(ids) + max_tokens) - len(ids)
            yield from genai_greedy(self.model.dir, ids, min(max_tokens, room), self._genai)
            return
        yield from self.model.generate(ids, max_tokens, temperature, self.repeat_penalty, self.eos_ids)

    def stream(self, messages: list[dict], max_tokens: int, temperature: float) -> Iterator[str]:
        self.finish_reason = "length"
        new, shown = [], ""
        for token in self.tokens(self.prompt_ids(messages), max_tokens, temperature):
            if token in self.eos_ids:
                self.finish_reason = "stop"
                break
            new.append(token)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
            shown = text
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if len(text) > len(shown):
            yield text[len(shown):]


def onnx_model_dirs(run_dir: Path) -> list[Path]:
    """RUN_DIR/onnx/<variant>/ folders holding a model, fp32 first (the least lossy first, as eval lists GGUFs)."""
    order = {"fp32": 0, "fp16": 1, "int8": 2, "int4": 3}
    found = [d for d in (Path(run_dir) / "onnx").glob("*") if (d / "model.onnx").is_file() and not d.name.startswith(".")]
    return sorted(found, key=lambda d: (order.get(d.name, 9), d.name))
