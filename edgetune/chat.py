"""Offline chat: llama.cpp on a .gguf file, onnxruntime on an exported ONNX folder, or transformers on a merged dir /
a run's adapter.

Interactive on a terminal (history kept, /reset, /quit); with piped stdin, one independent reply per input line so
it can be scripted and diffed.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from edgetune import runs
from edgetune.errors import EdgetuneError, ModelError
from edgetune.sampling import REPEAT_PENALTY




class Backend(Protocol):
    name: str

    def stream(self, messages: list[dict], max_tokens: int, temperature: float) -> Iterator[str]: ...


@dataclass
class Reply:
    text: str
    finish_reason: str  # stop | length


@dataclass
class ChatSession:
    backend: Backend
    label: str
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    history: list[dict] = field(default_factory=list)
    last_finish: str = ""

    def messages_for(self, prompt: str, keep_history: bool) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + (self.history if keep_history else []) + [{"role": "user", "content": prompt}]

    def ask(self, prompt: str, keep_history: bool = True, on_text=None) -> Reply:
        parts = []
        gen = self.backend.stream(self.messages_for(prompt, keep_history), self.max_tokens, self.temperature)
        for piece in gen:
            parts.append(piece)
            if on_text:
                on_text(piece)
        text = "".join(parts)
        reply = Reply(text, getattr(self.backend, "finish_reason", "stop"))
        if keep_history:
            self.history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
        return reply


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, path: Path, n_ctx: int = 2048, repeat_penalty: float = REPEAT_PENALTY, n_gpu_layers: int = 0):
        self.repeat_penalty = repeat_penalty
        from llama_cpp import Llama

        n_ctx = min(n_ctx, trained_context(path) or n_ctx)
        try:  # the chat template and EOS come from the GGUF's own metadata
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, verbose=False)
        except Exception as e:
            raise ModelError(f"{path}: llama.cpp could not load this file ({e})",
                             hint="re-export it with `edgetune export`, or check the file is a complete GGUF") from None
        self.finish_reason = "stop"

    def stream(self, messages, max_tokens, temperature):
        self.finish_reason = "stop"
        chunks = self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature,
                                                 repeat_penalty=self.repeat_penalty, stream=True, seed=0)
        try:
            first = next(chunks, None)
        except ValueError as e:  # llama-cpp-python checks the prompt length only when generation starts
            if "exceed context window" not in str(e):
                raise
            raise EdgetuneError(f"the conversation does not fit the model's context: {e}",
                                hint="start a new conversation (/reset), or shorten the system prompt") from None
        for chunk in _chain(first, chunks):
            choice = chunk["choices"][0]
            text = choice.get("delta", {}).get("content")
            if text:
                yield text
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest


def trained_context(path: Path) -> int | None:
    """The model's training context length from the GGUF header (a larger n_ctx only wastes KV-cache memory)."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(path)).fields
        arch = bytes(fields["general.architecture"].parts[-1]).decode()
        f = fields.get(f"{arch}.context_length")
        return int(f.parts[f.data[0]][0]) if f else None
    except Exception:  # noqa: BLE001 - only a sizing hint; llama.cpp reports real problems when loading
        return None


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, repeat_penalty: float = REPEAT_PENALTY):
        from edgetune.stops import stop_ids

        self.model, self.tokenizer = model, tokenizer
        self.repeat_penalty = repeat_penalty
        self.finish_reason = "stop"
        # every end-of-reply id (Gemma's <end_of_turn> besides <eos>, Llama 3's <|eot_id|> besides <|end_of_text|>):
        # passing only tokenizer.eos_token_id would replace the generation config's list
        self.stop_ids = stop_ids(tokenizer, model=model)

    @classmethod
    def from_dir(cls, path: Path, adapter: Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        from edgetune.tokenizer import load_tokenizer

        tok = load_tokenizer(adapter or path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        return cls(model, tok)

    def stream(self, messages, max_tokens, temperature):
        import torch
        from transformers import TextIteratorStreamer

        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**enc, max_new_tokens=max_tokens, streamer=streamer, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=self.stop_ids, repetition_penalty=self.repeat_penalty)
        kwargs.update(do_sample=True, temperature=temperature) if temperature > 0 else kwargs.update(do_sample=False)
        out = {}

        def run():
            with torch.no_grad():
                out["ids"] = self.model.generate(**kwargs)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        new = out["ids"][0, enc["input_ids"].shape[1]:]
        self.finish_reason = "stop" if len(new) and int(new[-1]) in self.stop_ids else "length"


def resolve_target(target: str, backend: str) -> tuple[str, Path, Path | None]:
    """Pick (backend, model path, adapter path) for a .gguf file, an ONNX folder, a run directory or an HF directory."""
    p = Path(target)
    if p.name == "model.onnx" or (p.is_dir() and (p / "model.onnx").is_file()):
        if backend not in ("auto", "onnx"):
            raise EdgetuneError(f"{p} is an ONNX model", hint="use --backend onnx (or auto)")
        return "onnx", p if p.is_dir() else p.parent, None
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"{p}: no such GGUF file", hint="check the path, or `ls RUN_DIR/gguf`")
        if backend == "hf":
            raise EdgetuneError("--backend hf cannot read a .gguf file", hint="use --backend llamacpp (or auto)")
        return "llamacpp", p, None
    if not p.exists():  # `default` or a hub id: the HF model itself
        from edgetune.models import resolve

        return "hf", Path(resolve(target).path), None
    if not p.is_dir():
        raise ModelError(f"{target}: not a .gguf file or a directory", hint="pass a run directory, a merged model dir or a .gguf file")
    if (p / runs.CONFIG).is_file():  # a run directory: newest artefact first
        if backend == "onnx":
            from edgetune.export.onnx_runtime import onnx_model_dirs

            found = onnx_model_dirs(p)
            if not found:
                raise ModelError(f"{p}: the run has no ONNX export yet", hint=f"edgetune export {p} --onnx int4")
            return "onnx", min(found, key=lambda d: sum(f.stat().st_size for f in d.glob("model.onnx*"))), None
        ggufs = sorted((p / runs.GGUF).glob("*.gguf"), key=lambda f: f.stat().st_size)
        if backend in ("auto", "llamacpp") and ggufs:
            return "llamacpp", ggufs[0], None
        if (p / runs.MERGED / "config.json").is_file():
            return "hf", p / runs.MERGED, None
        if (p / runs.ADAPTER).is_dir():
            from edgetune.runs import load_run_config
            from edgetune.models import resolve

            cfg = load_run_config(p)
            return "hf", Path(resolve(cfg.model.ref, cfg.model.revision, cfg.model.trust_remote_code).path), p / runs.ADAPTER
        raise ModelError(f"{p}: the run has no adapter, merged model or GGUF yet", hint="train it first")
    if (p / "config.json").is_file():
        if backend == "llamacpp":
            raise EdgetuneError(f"{p} is a Hugging Face directory", hint="export it to GGUF first, or use --backend hf")
        return "hf", p, None
    raise ModelError(f"{p}: no config.json, config.toml or .gguf here", hint="pass a run directory, merged dir or .gguf")


def open_chat(target: str, backend: str = "auto", system: str | None = None, max_tokens: int = 256,
              temperature: float = 0.0, repeat_penalty: float = REPEAT_PENALTY) -> ChatSession:
    if backend not in ("auto", "hf", "llamacpp", "onnx"):
        raise EdgetuneError(f"--backend {backend!r} is not known", hint="use auto, hf, llamacpp or onnx")
    kind, path, adapter = resolve_target(target, backend)
    if kind == "onnx":
        from edgetune.export.onnx_runtime import OnnxBackend

        impl = OnnxBackend(path, repeat_penalty=repeat_penalty)
    elif kind == "llamacpp":
        impl = LlamaCppBackend(path, repeat_penalty=repeat_penalty)
    else:
        impl = HFBackend.from_dir(path, adapter)
    impl.repeat_penalty = repeat_penalty
    label = f"{path.name} ({kind}{' + adapter' if adapter else ''})"
    return ChatSession(impl, label, system, max_tokens, temperature)


def chat_loop(session: ChatSession, prompt: str | None = None, stdin=None, stdout=None,
              compare: ChatSession | None = None) -> None:
    """Answer `prompt`, or each stdin line (piped), or an interactive conversation; with `compare`, both models
    answer every prompt, one after the other, each reply labelled."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    sessions = [session] + ([compare] if compare else [])

    def write(text):
        stdout.write(text)
        stdout.flush()

    def answer(text: str, keep_history: bool):
        for s in sessions:
            if compare:
                write(f"[{s.label}] ")
            s.ask(text, keep_history=keep_history, on_text=write)
            write("\n")

    if prompt is not None:
        answer(prompt, keep_history=False)
        return
    if not stdin.isatty():  # scripted: one independent reply per line
        for line in stdin:
            if line.strip():
                answer(line.rstrip("\n"), keep_history=False)
        return
    names = " vs ".join(s.label for s in sessions)
    sys.stderr.write(f"chatting with {names}; /reset clears history, /quit or Ctrl-D exits\n")
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if line.strip() in ("/quit", "/exit"):
            return
        if line.strip() == "/reset":
            for s in sessions:
                s.history.clear()
            continue
        if line.strip():
            answer(line, keep_history=True)
