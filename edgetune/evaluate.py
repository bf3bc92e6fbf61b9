"""The eval stage: task score and held-out loss for every model a run produced, side by side.

`edgetune eval RUN_OR_MODEL --data eval.jsonl` reads rows {"prompt": ..., "answer": ...} and, for each target (the
base model, the merged model or base+adapter, each GGUF file), reports:

- task score: the fraction of rows whose greedy reply matches the answer. Both sides go through
  `extract_answer` (an `<answer>...</answer>` tag, a JSON object's "answer" field, or a final `#### x` line; else the
  whole text) and `normalize` (lowercase; punctuation, articles and extra spaces dropped; numbers canonical:
  "1,000" -> "1000", "3.0" -> "3"), and are then compared as word sequences under a match rule:
      "exact"        the reply's words equal the answer's words (default; short answers: numbers, labels, names)
      "prefix[:k]"   the reply starts with the answer's first k words (k omitted or 0: the whole answer)
      "contains[:k]" the answer's first k words (0: all) occur as a run anywhere in the reply
  Free-text answers rarely match exactly. The pirate demo checks only the style, i.e. that a reply opens with
  "Arr!" as every demo answer does: match="prefix:1" (PIRATE_MATCH).
- held-out loss: mean negative log-likelihood per answer token of `answer` given the chat-templated `prompt`
  (teacher forcing), over the tokens training puts in the loss (the assistant turn and its end-of-turn marker).
  HF and GGUF targets are fed the same HF-tokenizer ids, so their losses compare directly (llama.cpp with an f32
  KV cache, so only the file's weights differ).
"""
from __future__ import annotations

import gc
import json
import re
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from edgetune import runs
from edgetune.chat import HFBackend, LlamaCppBackend
from edgetune.data.load import Problem, read_rows
from edgetune.errors import ConfigError, DataError, ModelError, RunDirError
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

MATCH_MODES = ("exact", "prefix", "contains")
PIRATE_MATCH = "prefix:1"  # the demo's answers all open with "Arr!"
EVAL_SHAPE = 'write each row as {"prompt": "question for the model", "answer": "the reply you expect"}'
_ALIASES = {"prompt": ("question", "input", "instruction", "query"),
            "answer": ("output", "completion", "response", "target", "reference")}


@dataclass
class EvalRow:
    prompt: str
    answer: str
    line: int  # position in the file (line of a .jsonl, row of a .json)


# --- rows --------------------------------------------------------------------------------------------------------

def load_eval_rows(path, problems: list[Problem] | None = None) -> list[EvalRow]:
    """Rows with a `prompt` and an `answer` (.jsonl/.json; .csv/.parquet also read). Bad rows are skipped and
    appended to `problems` (file:line, reason, fix); DataError when no row is usable."""
    name, bad = str(path), []
    records = read_rows(name, problems=bad)  # missing/empty/binary files raise DataError naming the file
    unit = "line" if Path(name).suffix.lower() in (".jsonl", ".ndjson", ".csv") else "row"
    for p in bad:
        p.fix = EVAL_SHAPE if "not an object" in p.reason else p.fix
    rows = []
    for pos, rec in records:
        reason, fix = _row_problem(rec)
        if reason:
            bad.append(Problem(name, pos, reason, fix, unit))
            continue
        rows.append(EvalRow(str(rec["prompt"]).strip(), str(rec["answer"]).strip(), pos))
    bad.sort(key=lambda p: p.line or 0)
    if problems is not None:
        problems.extend(bad)
    if not rows:
        listed = [f"  - {p}" for p in bad[:10]] + ([f"  - ... and {len(bad) - 10} more"] if len(bad) > 10 else [])
        raise DataError("\n".join([f"{name}: no usable eval rows ({len(bad)} rejected)", *listed]),
                        hint=bad[0].fix if bad else EVAL_SHAPE, problems=[str(p) for p in bad])
    return rows


def _row_problem(rec: dict) -> tuple[str, str]:
    """(reason, fix) for a row that cannot be scored, or ("", "")."""
    if "messages" in rec or "conversations" in rec:
        return ("row is a chat conversation; eval rows are single prompt/answer pairs",
                'put the user turn in "prompt" and the reply you expect in "answer"')
    for key in ("prompt", "answer"):
        if key not in rec:
            alias = next((a for a in _ALIASES[key] if a in rec), None)
            keys = ", ".join(sorted(map(str, rec))) or "none"
            return (f'missing "{key}" (keys: {keys})', f'rename "{alias}" to "{key}"' if alias else EVAL_SHAPE)
        value = rec[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return f'"{key}" is a JSON {type(value).__name__}, not text', f'write "{key}" as a string'
        if not str(value).strip():
            return f'"{key}" is empty', f'write the {key} text, or delete the row'
    return "", ""


# --- answers and scoring -------------------------------------------------------------------------------------

_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)  # an unclosed tag: the reply was cut off
_HASHES = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.M)
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?!\w|\.\d)")
_ARTICLES = {"a", "an", "the"}


def extract_answer(reply: str) -> str:
    """The final answer inside a reply: the last <answer> tag, else a JSON object's "answer", else the last
    `#### x` line (GSM8K style), else the whole reply."""
    tags = _TAG.findall(reply)
    if tags:
        return tags[-1].strip()
    found = _json_answer(reply)
    if found is not None:
        return found
    lines = _HASHES.findall(reply)
    return lines[-1] if lines else reply.strip()


def _json_answer(reply: str) -> str | None:
    decoder, found, start = json.JSONDecoder(), None, reply.find("{")
    while start >= 0:
        try:
            obj, end = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            start = reply.find("{", start + 1)
            continue
        if isinstance(obj, dict) and "answer" in obj:
            value = obj["answer"]
            found = value if isinstance(value, str) else json.dumps(value)
        start = reply.find("{", end)
    return found


def _canonical_number(m: re.Match) -> str:
    whole = m.group(2).replace(",", "").lstrip("0") or "0"
    frac = (m.group(3) or "").rstrip("0").rstrip(".")
    text = whole + frac
    return "-" + text if m.group(1) and text != "0" else text


def _plain_words(text: str) -> str:
    return re.sub(r"[\W_]+", " ", re.sub(r"['\u2019`]", "", text))  # don't -> dont; other punctuation splits words


def normalize(text: str) -> str:
    """Lowercase, canonical numbers, no punctuation, no articles (a/an/the), single spaces."""
    text, parts, last = str(text).lower(), [], 0
    for m in _NUMBER.finditer(text):  # numbers first, so their "," and "." are read before punctuation goes
        parts += [_plain_words(text[last:m.start()]), _canonical_number(m)]
        last = m.end()
    parts.append(_plain_words(text[last:]))
    return " ".join(w for w in " ".join(parts).split() if w not in _ARTICLES)


def parse_match(spec: str) -> tuple[str, int | str]:
    """"exact" | "prefix[:k]" | "contains[:k]" -> (mode, k), k = 0 meaning the whole answer;
    "regex:PATTERN" -> ("regex", PATTERN), searched in the raw reply (the answer is not used), like the
    `regex_format` reward, so a GRPO format task can be scored with its own rule."""
    mode, _, k = str(spec).strip().partition(":")
    mode = mode.lower()
    if mode == "regex":
        try:
            re.compile(k)
        except re.error as e:
            raise ConfigError([f"match rule {spec!r}: bad regular expression ({e})"],
                              hint='write a Python regex after "regex:", e.g. "regex:^Arr! \\w+"') from None
        if not k:
            raise ConfigError([f"match rule {spec!r} has no pattern"], hint='write it as "regex:PATTERN"')
        return mode, k
    if mode not in MATCH_MODES or (k and not k.isdigit()) or (mode == "exact" and k):
        raise ConfigError([f"match rule {spec!r} is not known"],
                          hint='use "exact", "prefix", "prefix:K" (the answer\'s first K words), "contains", '
                               '"contains:K" or "regex:PATTERN"; e.g. "prefix:1" checks the first word only')
    return mode, int(k or 0)


def is_correct(reply: str, answer: str, match: str = "exact") -> bool:
    mode, k = parse_match(match)
    if mode == "regex":
        return re.search(k, reply, re.MULTILINE) is not None  # as the regex_format reward reads it
    got, want = normalize(extract_answer(reply)).split(), normalize(extract_answer(answer)).split()
    want = want[:k] if k else want
    if mode == "exact":
        return got == want
    if mode == "prefix":
        return got[:len(want)] == want
    return f" {' '.join(want)} " in f" {' '.join(got)} "


# --- held-out loss -------------------------------------------------------------------------------------------

def messages_for(row: EvalRow, system: str | None = None, with_answer: bool = False) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": row.prompt})
    return msgs + ([{"role": "assistant", "content": row.answer}] if with_answer else [])


def answer_nll(logits: np.ndarray, ids: list[int], mask: list[int]) -> tuple[float, int]:
    """Summed NLL of the masked tokens (token j is predicted by the logits at j-1) and how many there were."""
    pos = np.array([j for j in range(1, len(ids)) if mask[j]], dtype=np.int64)
    if not len(pos):
        return 0.0, 0
    rows = logits[pos - 1].astype(np.float64)
    top = rows.max(axis=-1)
    log_z = top + np.log(np.exp(rows - top[:, None]).sum(axis=-1))
    return float((log_z - rows[np.arange(len(pos)), np.asarray(ids)[pos]]).sum()), len(pos)


class LlamaCppScorer:
    """All-position logits from a GGUF. A second llama.cpp context on the same file (weights are mmapped, so shared
    with the chat backend); f32 KV cache, since the default f16 cache alone adds ~1e-3 relative noise."""

    def __init__(self, path: Path, n_ctx: int, kv_f32: bool = True):
        import llama_cpp

        kv = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32) if kv_f32 else {}
        self.llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=n_ctx, n_batch=64, n_ubatch=64, verbose=False, **kv)

    def logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return self.llm.scores[: len(ids)]  # a view, read before the next eval (n_batch 64: small logit buffers)

    def close(self):
        self.llm.close()


def hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float().cpu().numpy()


def logits_fn(backend, longest: int):
    """A function ids -> logits for this backend, and a cleanup function."""
    if isinstance(backend, LlamaCppBackend):
        scorer = LlamaCppScorer(Path(backend.llm.model_path), n_ctx=max(256, longest + 16))
        return scorer.logits, scorer.close
    if backend.name == "onnx":  # export.onnx_runtime.OnnxBackend: onnxruntime's full-sequence pass
        return backend.model.logits, lambda: None
    return partial(hf_logits, backend.model), lambda: None


def heldout_loss(backend, rows: list[EvalRow], system: str | None = None) -> tuple[float, int]:
    """(mean NLL per answer token over all rows, number of answer tokens)."""
    encoded = encode_rows(tokenizer_of(backend), rows, system)
    fn, close = logits_fn(backend, max(len(ids) for ids, _ in encoded))
    try:
        total = [answer_nll(fn(ids), ids, mask) for ids, mask in encoded]
    finally:
        close()
    n = sum(k for _, k in total)
    return (sum(s for s, _ in total) / n if n else float("nan")), n


def encode_rows(tokenizer, rows: list[EvalRow], system: str | None) -> list[tuple[list[int], list[int]]]:
    from edgetune.data.template import encode  # the same ids and loss mask training uses

    return [encode(tokenizer, messages_for(r, system, with_answer=True)) for r in rows]


def tokenizer_of(backend):
    """The HF tokenizer held-out loss tokenizes with (a GGUF's own, rebuilt by transformers, if none was given)."""
    tok = getattr(backend, "tokenizer", None)
    if tok is None and isinstance(backend, LlamaCppBackend):
        tok = backend.tokenizer = gguf_tokenizer(Path(backend.llm.model_path))
    return tok


# --- targets -------------------------------------------------------------------------------------------------

def gguf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    from edgetune.gguf_tokenizer import sentencepiece_tokenizer
    from edgetune.models import fix_special_tokens

    tok = sentencepiece_tokenizer(path) or AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    fix_special_tokens(tok, path)
    return tok


class GGUFBackend(LlamaCppBackend):
    """chat's llama.cpp backend plus the HF tokenizer held-out loss tokenizes with (the run's, when it has one)."""

    temp_dir: Path | None = None  # a file converted for this eval lives here; removed after scoring

    def __init__(self, path: Path, tokenizer_dir: Path | None = None):
        super().__init__(Path(path))
        if tokenizer_dir is not None:
            from edgetune.tokenizer import load_tokenizer

            self.tokenizer = load_tokenizer(tokenizer_dir)


def load_hf(model_dir: str, tokenizer_dir: Path | None = None, adapter: Path | None = None, base=None) -> HFBackend:
    """An fp32 HF model (or `base`, already loaded) with an optional LoRA adapter, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.models import load_error
    from edgetune.tokenizer import load_tokenizer

    try:
        tok = load_tokenizer(tokenizer_dir or adapter or model_dir)
        model = base if base is not None else AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, use_safetensors=True)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
    except Exception as e:
        raise load_error(str(model_dir), e) from None
    return HFBackend(model.eval(), tok)


def _trained(run_dir: Path) -> HFBackend:
    """base+adapter exactly as training saw it (the 4-bit base when the run used one)."""
    from edgetune.engines.base import Precision
    from edgetune.engines.hf import HFEngine
    from edgetune.models import resolve
    from edgetune.runs import load_run_config

    cfg = load_run_config(run_dir)
    resolved = resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code)
    base = HFEngine().load_base(resolved, cfg, Precision("fp32", "cpu"))
    return load_hf(resolved.path, adapter=run_dir / runs.ADAPTER, base=base)


FP32_RAM_SHARE = 0.5  # an HF model is scored in fp32 when that copy takes at most this share of the free RAM


def hf_target(label: str, model, tokenizer_dir: Path | None, run_dir: Path, sink=null_sink) -> tuple[str, object]:
    """Score an HF model (a ResolvedModel or a folder) in fp32 transformers when that fits in RAM; else through an
    F16 GGUF that edgetune's converter writes (tensor by tensor) for the eval and removes after: llama.cpp holds
    2 bytes per weight (mapped from the file) instead of 4, and runs much faster on a CPU."""
    import psutil

    from edgetune.export.disk_plan import checkpoint_params
    from edgetune.models import local_checkpoint

    folder = Path(model) if isinstance(model, (str, Path)) else local_checkpoint(model)
    try:
        fp32_bytes = 4 * checkpoint_params(folder)
    except (OSError, ValueError):
        fp32_bytes = 0  # no safetensors headers to read: transformers decides
    if fp32_bytes <= FP32_RAM_SHARE * psutil.virtual_memory().available:
        return label, partial(load_hf, str(folder), tokenizer_dir)
    sink(Note(f"{label}: an fp32 copy ({fp32_bytes / 1e9:.1f} GB) does not fit comfortably in free RAM; scoring it "
              "through a temporary F16 GGUF in llama.cpp"))
    return f"{label} (F16 GGUF)", partial(_as_f16_gguf, folder, tokenizer_dir or folder, run_dir, sink)


def _as_f16_gguf(folder: Path, tokenizer_dir: Path, run_dir: Path, sink) -> "GGUFBackend":
    """Convert folder's weights with tokenizer_dir's tokenizer (the run's chat template) to a temporary F16 GGUF."""
    import os
    import tempfile

    from edgetune.export.gguf_convert import convert

    work = Path(tempfile.mkdtemp(prefix=".eval-gguf-", dir=run_dir))
    try:
        src = work / "model"
        src.mkdir()
        for f in Path(folder).iterdir():
            if f.suffix in (".safetensors", ".py") or f.name in ("config.json", "generation_config.json",
                                                                  "model.safetensors.index.json"):
                os.symlink(f.resolve(), src / f.name)
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and not (src / f.name).exists() and f.suffix in (".json", ".jinja", ".model", ".txt"):
                shutil.copy2(f, src / f.name)
        backend = GGUFBackend(convert(src, work / "eval.F16.gguf", "f16", sink), tokenizer_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    backend.temp_dir = work  # removed by evaluate_targets once the target is scored
    return backend


def targets_for(run_or_model: str, sink=null_sink) -> list[tuple[str, object]]:
    """(label, backend factory) pairs. A run dir: its base model, merged/ (else base+adapter), every gguf/*.gguf and
    every onnx/<variant>/; an ONNX folder, a .gguf file, an HF dir, a hub id or `default`: just that model.
    Factories load on call, one model at a time."""
    from edgetune.export.onnx_runtime import OnnxBackend, onnx_model_dirs

    p = Path(run_or_model)
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise ModelError(f"{p}: no such GGUF file", hint="check the path, or `ls RUN_DIR/gguf`")
        return [(p.name, partial(GGUFBackend, p))]
    if p.is_dir() and (p / "model.onnx").is_file():  # an exported ONNX folder (tokenizer saved next to it)
        return [(f"onnx {p.name}", partial(OnnxBackend, p))]
    from edgetune.runs import load_run_config
    from edgetune.models import resolve

    if not (p / runs.CONFIG).is_file():
        resolved = resolve(str(run_or_model), sink=sink)
        return [(resolved.name, partial(load_hf, resolved.path))]
    cfg = load_run_config(p)
    merged, adapter = p / runs.MERGED, p / runs.ADAPTER
    tok_dir = merged if (merged / "config.json").is_file() else adapter if adapter.is_dir() else None
    base = resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code, sink)
    targets = [hf_target(f"base {base.name}", base, tok_dir, p, sink)]
    if (merged / "config.json").is_file():
        targets.append(hf_target("merged", merged, merged, p, sink))
    elif adapter.is_dir():
        targets.append(("base+adapter", partial(_trained, p)))
    ggufs = sorted((p / runs.GGUF).glob("*.gguf"), key=lambda f: -f.stat().st_size)  # biggest (least lossy) first
    targets += [(g.name, partial(GGUFBackend, g, tok_dir)) for g in ggufs]
    targets += [(f"onnx {d.name}", partial(OnnxBackend, d, tokenizer_dir=tok_dir)) for d in onnx_model_dirs(p)]
    if len(targets) == 1:
        raise RunDirError(f"{p}: the run has no adapter, merged model or GGUF yet", hint="train it first")
    return targets


# --- the stage -----------------------------------------------------------------------------------------------

def evaluate_targets(targets: list[tuple[str, object]], rows: list[EvalRow], max_tokens: int = 128, sink=null_sink,
                     match: str = "exact", system: str | None = None, n_examples: int = 3) -> list[dict]:
    """One result per target: label, backend, task_score, heldout_loss, n, seconds, a few example replies.

    A target's second item is a backend (chat.HFBackend / chat.LlamaCppBackend) or a zero-argument function that
    builds one (as targets_for returns): those are loaded one at a time and released after scoring. A GGUF backend
    without a `tokenizer` attribute gets the HF tokenizer rebuilt from the file's metadata.
    Replies are greedy (temperature 0), `max_tokens` long at most.
    """
    parse_match(match)  # a bad rule fails before any model loads
    results, total, t_stage = [], len(targets) * len(rows), time.time()
    sink(StageStarted("eval", f"{len(targets)} model(s) x {len(rows)} rows, match {match}"))
    for t_index, (label, item) in enumerate(targets):
        t0 = time.time()
        built = not hasattr(item, "stream")  # a factory: we own (and release) what it builds
        backend = item() if built else item
        encoded = encode_rows(tokenizer_of(backend), rows, system)
        logits, close = logits_fn(backend, max(len(ids) for ids, _ in encoded))
        correct, nll, n_tokens, examples = 0, 0.0, 0, []
        try:
            for i, (row, (ids, mask)) in enumerate(zip(rows, encoded), 1):
                reply = "".join(backend.stream(messages_for(row, system), max_tokens, 0.0))
                ok = is_correct(reply, row.answer, match)
                s, k = answer_nll(logits(ids), ids, mask)
                correct, nll, n_tokens = correct + ok, nll + s, n_tokens + k
                if len(examples) < n_examples:
                    examples.append({"prompt": row.prompt, "answer": row.answer, "reply": reply, "correct": ok})
                sink(Progress("eval", t_index * len(rows) + i, total, f"{label}: row {i}/{len(rows)}"))
        finally:
            close()
        result = {"label": label, "backend": backend.name, "task_score": correct / len(rows), "correct": correct,
                  "heldout_loss": nll / n_tokens if n_tokens else None, "loss_tokens": n_tokens, "n": len(rows),
                  "match": match, "seconds": round(time.time() - t0, 2), "examples": examples}
        results.append(result)
        loss = "n/a" if result["heldout_loss"] is None else f"{result['heldout_loss']:.4f}"
        sink(Note(f"{label}: task score {result['task_score']:.1%} ({correct}/{len(rows)}, match {match}); "
                  f"held-out loss {loss} over {n_tokens} answer tokens; {result['seconds']:.0f} s"))
        del logits
        release(backend, built)
        del backend
    sink(StageFinished("eval", time.time() - t_stage))
    return results


def release(backend, built: bool = True) -> None:
    """Free a backend a target factory built (llama.cpp context, a temporary F16 GGUF): one model at a time."""
    if built and isinstance(backend, LlamaCppBackend):
        backend.llm.close()
        if getattr(backend, "temp_dir", None):
            shutil.rmtree(backend.temp_dir, ignore_errors=True)
    gc.collect()


def write_eval_report(run_dir: Path, results: list[dict], data_path: str = "") -> None:
    """Record the results in RUN/report.json under "eval"."""
    from edgetune.runs import update_report

    update_report(run_dir, "eval", {"data": str(data_path), "targets": results})


def run_eval(run_or_model: str, data_path: str, max_tokens: int = 128, match: str = "exact", sink=null_sink,
             system: str | None = None) -> list[dict]:
    """The whole stage, as `edgetune eval` runs it: rows, targets, scores; report.json when given a run dir."""
    problems: list[Problem] = []
    rows = load_eval_rows(data_path, problems)
    for p in problems[:5]:
        sink(Note(f"skipped {p}", "warning"))
    parse_match(match)
    is_run = (Path(run_or_model) / runs.CONFIG).is_file()
    if is_run and system is None:
        from edgetune.runs import load_run_config

        system = load_run_config(Path(run_or_model)).data.system_prompt or None  # as training saw its prompts
    try:
        results = evaluate_targets(targets_for(run_or_model, sink), rows, max_tokens, sink, match, system)
    finally:  # Ctrl-C while a converted F16 was in use
        for stale in Path(run_or_model).glob(".eval-gguf-*") if is_run else ():
            shutil.rmtree(stale, ignore_errors=True)
    if is_run:
        write_eval_report(Path(run_or_model), results, data_path)
    return results
