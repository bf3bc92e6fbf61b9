"""The verification gate run after every GGUF export: does the file behave like the merged HF model?

One fp32 transformers forward pass (HFReference) is shared by every file of an export. Each GGUF is loaded in
llama.cpp and checked for: identical token ids on a fixed multilingual/code/emoji set, the next-token distribution
against HF on held-out texts (KL divergence: mean and worst position; top-1 agreement reported beside it), greedy chat
replies that end at EOS, every stop token ending generation, vocab sizes and the chat template.
Full-precision files must match (check_gate raises); quantized files report their numbers for the user to choose.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.sampling import REPEAT_PENALTY  # stop-at-EOS is checked with the sampling settings users deploy
from edgetune.errors import ExportError
from edgetune.events import Note, Progress, null_sink
from edgetune.stops import end_of_turn_token, stop_ids

from .quantize import _usable_cpus

FULL_PRECISION = ("f32", "f16", "bf16")
# The gate judges the distribution, not the argmax: float rounding flips near-ties (a top-1 "disagreement" between two
# tokens HF itself scores 0.0008 nats apart) while moving the distribution by ~1e-5 nats; a conversion bug moves it by
# nats. Measured with edgetune's converter (2026-12): the tiny family checkpoints of tests/families.py, ~1170
# positions each, F16 mean KLD 8e-7 (Gemma 3) .. 6.7e-5 (SmolLM3), worst single position 9e-5 .. 1.8e-3 (Mistral),
# strict top-1 0.993-1.000 (Llama 3.2: 0.993 at mean 2.6e-5); real google/gemma-3-270m: mean 1.6e-5, worst 5.9e-5,
# top-1 1.000; SmolLM2-135M: mean 1e-5. BF16 (8-bit mantissa) mean up to 4.6e-3, worst 0.08 on those sharply peaked
# random models. Deliberately wrong conversions: Gemma norms without +1 mean 5.0 / worst 7.1 nats, Llama q/k left
# unpermuted 3.9 / 10.7. The worst-position bound (1e-2) sits 5x above the worst F16 rounding seen, and catches a bug
# confined to a few positions that the mean over ~1000 positions would dilute.
MAX_MEAN_KLD = {"f32": 1e-4, "f16": 1e-4, "bf16": 1e-2}
MAX_POSITION_KLD = {"f32": 1e-2, "f16": 1e-2, "bf16": 0.25}
# Reported beside the gate: a position also "agrees" when HF nearly ties llama.cpp's pick (within this many nats).
TIE_NATS = {"f32": 0.01, "f16": 0.01, "bf16": 0.05}
CHAT_MAX_TOKENS = 96
MAX_TEXT_TOKENS = 256  # per comparison text: enough context, bounded cost (positions x vocab floats cached)
SEED = 0
COMPARE_ROWS = 32  # positions compared at a time
LOGITS_BYTES = 256 * 1024**2  # fp32 logits of one reference batch: 512 tokens of a 128k vocab
VERIFY_BATCH = 64  # tokens llama.cpp evaluates at a time while verifying

# Tokenizer round-trip set: scripts, emoji (incl. ZWJ sequences and skin tones), code, JSON, numbers, inline
# ChatML special tokens and awkward whitespace, where pre-tokenizer mismatches show up first.
FIXED_TOKENIZER_TEXTS = [
    "Hello, world! How are you today? I'm fine, thanks - and you're?",
    "Grüße aus München: Übermäßig schöne Äpfel, Öl und Straßenbahn.",
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "こんにちは世界。東京は日本の首都です。カタカナとひらがな。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "Привет, мир! Как дела? Ёлка и щука.",
    "emoji 🙂🚀🦙 family 👨‍👩‍👧‍👦 rainbow flag 🏳️‍🌈 thumbs 👍🏽 fog 😶‍🌫️ ✅",
    "def fib(n):\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)\n",
    '{"name": "edgetune", "version": [0, 1, 0], "nested": {"ok": true, "pi": 3.14159}}',
    "Numbers: 0 7 42 123 1234 12345 1234567890 3.14159 -2.5e-10 1,000,000 50%",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "   leading spaces, trailing spaces   ",
    "\n\nleading newlines\nand trailing ones\n\n\n",
    "tabs\tand  double  spaces \t mixed\r\nwith CRLF",
]

# Generic comparison texts, added to a run's own held-out rows.
GENERIC_TEXTS = [
    "Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide and water, "
    "releasing oxygen as a byproduct. It takes place mostly in the leaves, inside small structures called "
    "chloroplasts, which contain the green pigment chlorophyll that absorbs red and blue light.",
    "The Python language emphasizes readability through significant indentation, and its standard library covers "
    "everything from file handling to networking. Beginners often start with scripts that read a text file, count "
    "words and print the most common ones, before moving on to web servers and data analysis.",
    "In 1969 Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on the surface while Michael "
    "Collins stayed in orbit. The mission returned safely to Earth on July 24, after eight days in space, and the "
    "crew spent three weeks in quarantine.",
    "def mean(values):\n    \"\"\"Average of a non-empty list.\"\"\"\n    if not values:\n        raise ValueError(\"empty\")\n"
    "    return sum(values) / len(values)\n\n\nfor row in [[1, 2, 3], [4.5, 5.5]]:\n    print(f\"{row}: {mean(row):.2f}\")\n",
    "To make a cup of tea, boil fresh water, pour it over the leaves or the bag, and wait three to five minutes. "
    "Green tea prefers cooler water, around 80 degrees Celsius, while black tea can take it boiling. Add milk or "
    "lemon if you like, but not both at once.",
    "Dear team, thank you for your work this quarter. We shipped the new search page two weeks early, reduced the "
    "error rate by half and answered every customer ticket within a day. Next month we will focus on speed.",
    "Die Hauptstadt von Deutschland ist Berlin. La capitale de la France est Paris. La capital de España es "
    "Madrid. The capital of Italy is Rome, and the capital of Japan is Tokyo.",
    "Q: A train leaves at 3 pm and travels 120 km at 60 km per hour. When does it arrive?\nA: It needs 120 / 60 = "
    "2 hours, so it arrives at 5 pm.\nQ: What is 15% of 200?\nA: 0.15 * 200 = 30.",
]

# Short-answer prompts: SmolLM2-135M-Instruct F16 ends all three within 96 tokens (its Q8_0/Q4_K_M loop on France).
DEFAULT_CHAT_PROMPTS = [
    "What is the capital of France?",
    "What is 2 + 2?",
    "Is water wet? Answer yes or no.",
]


class HFReference:
    """The merged HF model, run in fp32 layer by layer from disk (edgetune/streamed.py); next-token log-probs per
    text are computed once, in batches, and kept in files beside the export (one text in memory at a time).
    The model (its 16-bit embedding table: 0.5 GB for a 1B Llama) is let go after each `prepare`, so it is not
    resident while llama.cpp maps the file under test; texts not seen yet reopen it."""

    def __init__(self, model_dir: Path, max_tokens: int = MAX_TEXT_TOKENS, cache_dir: Path | None = None,
                 sink=null_sink, num_layers: int | None = None):
        import tempfile
        import weakref

        from edgetune.streamed import open_causal_lm
        from edgetune.tokenizer import load_tokenizer

        self.model_dir = Path(model_dir)
        self.max_tokens = max_tokens
        self.tokenizer = load_tokenizer(self.model_dir)
        self._sink = sink
        self.num_layers = num_layers  # None: the whole model; N: its first N layers (the F16 check's layer slice)
        self.model = open_causal_lm(self.model_dir, sink=sink, num_layers=num_layers)
        self.embedding_rows = self.model.get_input_embeddings_rows()
        self.tokenizer_len = len(self.tokenizer)
        # not /tmp: on WSL and many Linux setups it is RAM (tmpfs), and these files reach gigabytes for 128k vocabs
        self._dir = Path(tempfile.mkdtemp(prefix=".edgetune-reference-", dir=cache_dir or self.model_dir.parent))
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._cache: dict[str, tuple[list[int], Path]] = {}

    def ids(self, text: str) -> list[int]:
        """Token ids as the model sees the text (special tokens parsed, BOS as the tokenizer adds it), capped."""
        return list(self.tokenizer(text)["input_ids"][: self.max_tokens])

    def plain_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prepare(self, texts: list[str]) -> None:
        """Log-probs for every new text, batched so that one batch's fp32 logits stay near LOGITS_BYTES."""
        import torch

        todo = [(t, self.ids(t)) for t in dict.fromkeys(texts) if t not in self._cache]
        if not todo:
            return
        if self.model is None:
            from edgetune.streamed import open_causal_lm

            self.model = open_causal_lm(self.model_dir, sink=self._sink, num_layers=self.num_layers)
        budget = max(1, LOGITS_BYTES // (4 * max(self.embedding_rows, 1)))  # tokens per batch
        batch: list[tuple[str, list[int]]] = []
        for i, item in enumerate(todo):
            batch.append(item)
            nxt = todo[i + 1][1] if i + 1 < len(todo) else None
            if nxt is None or max(len(b[1]) for b in batch + [("", nxt)]) * (len(batch) + 1) > budget:
                self._run(batch, torch)
                batch = []
        self.release()

    def release(self) -> None:
        """Let the model go (the cached log-probs stay)."""
        import gc

        from edgetune.streamed import release_freed_memory

        self.model = None
        gc.collect()
        release_freed_memory()

    def _run(self, batch, torch) -> None:
        width = max(len(ids) for _, ids in batch)
        ids = torch.tensor([ids + [0] * (width - len(ids)) for _, ids in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for _, i in batch])
        logits = self.model(ids, mask).logits
        for row, (text, tids) in enumerate(batch):
            path = self._dir / f"{len(self._cache)}.npy"
            np.save(path, torch.log_softmax(logits[row, : len(tids)].float(), -1).numpy())
            self._cache[text] = (tids, path)

    def logprobs(self, text: str) -> tuple[list[int], np.ndarray]:
        """(ids, log-softmax of the next-token logits at every position) for `text`."""
        self.prepare([text])
        ids, path = self._cache[text]
        return ids, np.load(path)

    def chat_prompt_tokens(self, prompt: str) -> int:
        """Tokens of `prompt` as a chat turn with the template's own additions (SmolLM3 writes a long default system
        block), so the chat check's context fits it."""
        try:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - no usable template: the plain prompt plus a margin
            return len(self.ids(prompt)) + 128
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1

    def end_of_turn_id(self) -> int | None:
        """The token the chat template puts after an assistant reply (<|im_end|>, <|eot_id|>, <end_of_turn>, ...)."""
        token = end_of_turn_token(self.tokenizer)
        return self.tokenizer.convert_tokens_to_ids(token) if token else self.tokenizer.eos_token_id

    def stop_ids(self) -> list[int]:
        """Every id that ends a reply (generation config, eos, end of turn): llama.cpp must stop at each."""
        return stop_ids(self.tokenizer, self.model_dir)


def verify_gguf(gguf_path: Path, ref: HFReference, texts: list[str], chat_prompts: list[str], qtype: str,
                sink=null_sink) -> dict:
    """Check one GGUF file against `ref`; returns a JSON-able result (see check_gate for what must hold)."""
    import llama_cpp

    gguf_path = Path(gguf_path)
    qtype = qtype.lower()
    sink(Note(f"verifying {gguf_path.name} ({qtype.upper()}): {len(FIXED_TOKENIZER_TEXTS)} tokenizer texts, "
              f"{len(texts)} comparison texts, {len(chat_prompts)} chat prompts"))
    ref.prepare(texts)  # before llama.cpp maps the file: the HF side and the GGUF are never resident together
    longest = max((len(ref.ids(t)) for t in texts), default=0)
    longest_chat = max((ref.chat_prompt_tokens(p) + CHAT_MAX_TOKENS + 16 for p in chat_prompts), default=0)
    # as small as the texts allow: llama.cpp and its Python binding each hold n_ctx x vocab fp32 logits (2 x 262 MB
    # at 512 tokens of a 128k vocab)
    llm = _load(gguf_path, n_ctx=max(64, longest + 16, longest_chat))
    try:
        mismatches = _token_mismatches(llm, ref)
        agreement = compare_logits(_llama_logits(llm), ref, texts, TIE_NATS.get(qtype, 0.01), sink)
        finish_reasons, replies = _chat(llm, chat_prompts, sink)
        n_vocab = llm.n_vocab()
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        not_eog = [i for i in ref.stop_ids() if i < n_vocab and not llama_cpp.llama_vocab_is_eog(vocab, i)]
        template_present = bool(llm.metadata.get("tokenizer.chat_template"))
    finally:
        llm.close()
    result = {
        "file": gguf_path.name,
        "path": str(gguf_path),
        "type": qtype,
        "size_bytes": gguf_path.stat().st_size,
        "token_ids_identical": not mismatches,
        "token_mismatches": mismatches[:3],
        "top1": round(agreement.top1, 5),  # strict: llama.cpp's argmax == HF's argmax
        "top1_ties_ok": round(agreement.top1_ties, 5),  # near-ties of the HF model counted as agreement
        "mean_kld": _nats(agreement.mean_kld),  # gated for full precision, with max_kld
        "max_kld": _nats(agreement.max_kld),  # the worst single position
        "positions": agreement.positions,
        "stops_at_eos": all(r == "stop" for r in finish_reasons) if finish_reasons else None,  # None: not asked
        "finish_reasons": finish_reasons,
        "replies": replies,
        "n_vocab": {"gguf": n_vocab, "hf_embedding_rows": ref.embedding_rows, "tokenizer": ref.tokenizer_len},
        # padded embeddings (e.g. Qwen's 151936 rows for ~151k tokens) are fine; the GGUF must match the rows
        "vocab_size_ok": n_vocab == ref.embedding_rows and ref.tokenizer_len <= ref.embedding_rows,
        "end_of_turn_stops": not not_eog,  # every stop id ends generation in llama.cpp
        "stops_not_eog": [ref.tokenizer.convert_ids_to_tokens(i) for i in not_eog],
        "chat_template_present": template_present,
    }
    result["fidelity_failures"] = _fidelity_failures(result)
    result["failures"] = result["fidelity_failures"] + _behaviour_failures(result)
    result["passed"] = not result["failures"]
    sink(Note(f"{gguf_path.name}: mean KLD {agreement.mean_kld:.2e} (worst {agreement.max_kld:.2e}), top-1 "
              f"{agreement.top1:.4f} over {agreement.positions} positions, token ids "
              f"{'identical' if not mismatches else 'DIFFER'}, stops at EOS {result['stops_at_eos']}",
              level="info" if result["passed"] else "warning"))
    return result


def check_gate(result: dict) -> None:
    """Raise ExportError when a full-precision file does not reproduce the HF model.

    Quantized files never raise: their drift is expected and model-size dependent (SmolLM2-135M Q4_K_M agrees on
    ~80-89% of next tokens, a 7B far more), so no one threshold fits; the report shows the numbers and the user
    picks. They copy tokenizer and metadata from the F16, so export bugs are already caught there.
    A model that never stops is reported in `failures` for every type but does not raise here when the file
    itself is faithful (its distributions and token ids match HF): the HF model then behaves the same and the fix is in
    training (assistant turns must end with the end-of-turn token), not in the export. When llama.cpp does not
    treat the template's end-of-turn token as end-of-generation, that is an export fault and does raise.
    """
    if result["type"] not in FULL_PRECISION or not result.get("fidelity_failures"):
        return
    raise ExportError(
        f"{result['file']} ({result['type'].upper()}) does not behave like the merged model: "
        + "; ".join(result["fidelity_failures"]),
        hint="a full-precision GGUF must match transformers; do not ship quantized files made from it. Re-run "
             "`edgetune export` after checking the merged/ folder (config.json, tokenizer.json, chat template), "
             "and report the architecture/tokenizer if it persists")


def _fidelity_failures(r: dict) -> list[str]:
    out = []
    if r["type"] in FULL_PRECISION and (r["mean_kld"] > MAX_MEAN_KLD[r["type"]]
                                        or r["max_kld"] > MAX_POSITION_KLD[r["type"]]):
        out.append(f"next-token distributions differ from the merged model: mean KL divergence {r['mean_kld']:.2e} "
                   f"(allowed {MAX_MEAN_KLD[r['type']]:.0e}), worst position {r['max_kld']:.2e} (allowed "
                   f"{MAX_POSITION_KLD[r['type']]:.0e}) over {r['positions']} positions; top-1 agreement "
                   f"{r['top1']:.4f}")
    if not r["token_ids_identical"]:
        first = r["token_mismatches"][0]
        out.append(f"token ids differ from the HF tokenizer on {first['text'][:40]!r}: HF {first['hf'][:12]} vs "
                   f"GGUF {first['gguf'][:12]}")
    if not r["vocab_size_ok"]:
        v = r["n_vocab"]
        out.append(f"vocab sizes disagree: GGUF {v['gguf']}, HF embedding rows {v['hf_embedding_rows']}, "
                   f"tokenizer {v['tokenizer']}")
    if not r["chat_template_present"]:
        out.append("no tokenizer.chat_template in the GGUF metadata (chat apps would use a wrong format)")
    if not r["end_of_turn_stops"]:
        out.append(f"llama.cpp does not end generation at {', '.join(r['stops_not_eog'])} (a stop token of this "
                   "model: generation config, eos or the chat template's end of turn)")
    return out


def _behaviour_failures(r: dict) -> list[str]:
    if r["stops_at_eos"] is not False:
        return []
    n_len = sum(f != "stop" for f in r["finish_reasons"])
    return [f"{n_len} of {len(r['finish_reasons'])} greedy chat replies (repeat penalty {REPEAT_PENALTY}) did not stop within {CHAT_MAX_TOKENS} "
            "tokens (the model does not end its turn; train longer or check that assistant turns end with the "
            "end-of-turn token)"]


def _load(path: Path, n_ctx: int):
    import llama_cpp

    try:  # f32 KV cache: the default f16 cache alone adds ~1e-3 relative noise to the logits
        # n_batch: llama.cpp keeps an output buffer and a compute buffer of n_batch x vocab fp32 logits (2 x 262 MB
        # for a 128k vocab at 512); 64 rows keep them at 33 MB each, beside the mapped file under test
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=VERIFY_BATCH, n_ubatch=VERIFY_BATCH, logits_all=True,
                               seed=SEED, n_threads=_usable_cpus(), type_k=llama_cpp.GGML_TYPE_F32,
                               type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
    except Exception as e:  # noqa: BLE001 - llama.cpp only says "failed to load"
        raise ExportError(f"{path}: llama.cpp could not load the exported file ({e})",
                          hint="the export is broken; re-run `edgetune export`") from None


def _token_mismatches(llm, ref: HFReference) -> list[dict]:
    out = []
    for text in FIXED_TOKENIZER_TEXTS:
        hf, ours = ref.plain_ids(text), llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if hf != ours:
            out.append({"text": text, "hf": hf, "gguf": ours})
    # BOS handling: llama.cpp must add exactly what the HF tokenizer adds (a doubled or missing BOS shifts logits)
    text = FIXED_TOKENIZER_TEXTS[0]
    hf, ours = list(ref.tokenizer(text)["input_ids"]), llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    if hf != ours:
        out.append({"text": f"[with special tokens] {text}", "hf": hf, "gguf": ours})
    return out


@dataclass
class Agreement:
    """How an exported file's next-token distributions compare with the HF model's, over `positions` tokens."""

    top1: float  # strict argmax agreement
    top1_ties: float  # agreement counting HF's near-ties (within tie_nats) as agreement
    mean_kld: float  # mean KL(HF || file) per position, nats
    max_kld: float  # the worst single position
    positions: int


def compare_logits(logits_fn, ref: HFReference, texts: list[str], tie_nats: float, sink=null_sink) -> Agreement:
    """Run the exported file (`logits_fn(ids) -> [T, V]`: llama.cpp, onnxruntime) on the same ids as HF."""
    agree, agree_ties, kld_sum, kld_max, positions = 0, 0, 0.0, 0.0, 0
    ref.prepare(texts)
    for i, text in enumerate(texts):
        ids, hf = ref.logprobs(text)
        if not ids:
            continue
        logits = logits_fn(ids)
        for a in range(0, len(ids), COMPARE_ROWS):  # float64 work in slices: 4 copies of [T x 128k] would be 1 GB
            ours = _log_softmax(np.asarray(logits[a:a + COMPARE_ROWS], dtype=np.float64))
            ref_rows = hf[a:a + COMPARE_ROWS].astype(np.float64)
            ours_top, hf_top = ours.argmax(-1), ref_rows.argmax(-1)
            rows = np.arange(len(ours))
            agree += int((ours_top == hf_top).sum())
            agree_ties += int((ref_rows[rows, hf_top] - ref_rows[rows, ours_top] <= tie_nats).sum())
            per_position = (np.exp(ref_rows) * (ref_rows - ours)).sum(-1)
            kld_sum += float(per_position.sum())
            kld_max = max(kld_max, float(per_position.max()))
        positions += len(ids)
        sink(Progress("verify", i + 1, len(texts), "logits"))
    if not positions:
        raise ExportError("no comparison text produced any tokens", hint="pass non-empty comparison texts")
    # float noise can make an exact match a hair negative
    return Agreement(agree / positions, agree_ties / positions, max(kld_sum / positions, 0.0), max(kld_max, 0.0),
                     positions)


def _nats(value: float) -> float:
    return float(f"{value:.3g}")  # three significant digits: 8e-7 and 0.0548 both stay readable


def _llama_logits(llm):
    def logits(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return llm.scores[: len(ids)]  # a view: compare_logits reads it before the next eval (no 131 MB copy)
    return logits


def _chat(llm, prompts: list[str], sink) -> tuple[list[str], list[str]]:
    reasons, replies = [], []
    for i, prompt in enumerate(prompts):
        llm.reset()
        out = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=CHAT_MAX_TOKENS,
                                         temperature=0.0, seed=SEED, repeat_penalty=REPEAT_PENALTY)
        choice = out["choices"][0]
        reasons.append(choice.get("finish_reason") or "length")
        replies.append((choice["message"].get("content") or "")[:200])
        sink(Progress("verify", i + 1, len(prompts), "chat"))
    return reasons, replies


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def heldout_texts(run_dir_or_data, tokenizer, n: int = 6, sink=null_sink) -> list[str]:
    """Comparison texts: up to `n` of the run's held-out conversations rendered with the chat template (a run dir,
    or a data file path), then GENERIC_TEXTS. None gives the generic texts only."""
    from edgetune.errors import DataError

    if run_dir_or_data is None:
        return list(GENERIC_TEXTS)
    from edgetune import runs

    held = runs.read_texts(Path(run_dir_or_data), runs.HELDOUT)  # exactly what training held out
    if held is None and (trained := runs.read_texts(Path(run_dir_or_data), runs.CALIBRATION)) is not None:
        sink(Note("the run has no eval split (data.eval_fraction = 0); comparing on training rows", level="warning"))
        held = trained
    if held is not None:
        return held[:n] + list(GENERIC_TEXTS)
    try:
        convs = _heldout_conversations(Path(run_dir_or_data), n, sink)
    except DataError as e:  # the data moved since training: verify on the generic texts rather than not at all
        sink(Note(f"held-out rows unavailable ({e.message}); comparing on generic texts only", level="warning"))
        convs = []
    return [tokenizer.apply_chat_template(c, tokenize=False) for c in convs] + list(GENERIC_TEXTS)


def _heldout_conversations(path: Path, n: int, sink) -> list[list[dict]]:
    from edgetune.config import DataConfig
    from edgetune.data import load_conversations
    from edgetune import runs

    fraction, seed = 0.0, 42
    if (path / runs.CONFIG).is_file():
        from edgetune.runs import load_run_config

        cfg = load_run_config(path)
        data_cfg, fraction, seed = cfg.data, cfg.data.eval_fraction, cfg.train.seed
    else:
        data_cfg = DataConfig(path=str(path))
    convs, _problems, _fmt = load_conversations(data_cfg)
    if fraction > 0 and len(convs) >= 10:
        # the same split train.prepare_data makes (exact when no row was dropped for length)
        from datasets import Dataset

        test = Dataset.from_dict({"i": list(range(len(convs)))}).train_test_split(test_size=fraction, seed=seed)
        return [convs[i] for i in test["test"]["i"][:n]]
    if (path / runs.CONFIG).is_file():
        sink(Note("the run has no eval split (data.eval_fraction = 0); comparing on training rows", level="warning"))
    return convs[:n]
