"""A transformers causal LM whose weights stay on disk: each block's weights are read just before it runs and
dropped right after, so a forward pass over a 3B model holds one decoder layer (plus the embeddings) in memory.

The model object is transformers' own class built without weights (parameters on the meta device, buffers such as
rotary frequencies computed as usual), so masks, rotary embeddings and every family's quirks are the library's
code, not a re-implementation. Forward hooks do the loading; anything that can hook nn.Linear (the importance
matrix) works unchanged. Used by the merge check, the export's reference logits and the importance matrix.
"""
from __future__ import annotations

from pathlib import Path

from edgetune.safetensors_io import checkpoint_index, read_tensor


class StreamedCausalLM:
    """`model(input_ids, attention_mask=None)` like the transformers model, with weights read per block.

    `transform(name, tensor)` may change a weight as it is read (the merge check applies NF4 rounding there); it
    must act element by element on the output layer, which is read in row slices. Memory: a plain embedding table
    stays in its stored 16-bit dtype (its lookups are cast to fp32, which is exact), the output layer is applied
    in slices of vocab rows, and freed heap pages go back to the OS after each block (glibc keeps them otherwise;
    benchmarks/export_phases.py prints peak memory per export phase).
    """

    def __init__(self, model_dir: Path, dtype=None, transform=None, trust_remote_code: bool = False,
                 num_layers: int | None = None):
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.dtype = dtype or torch.float32
        self.transform = transform
        config = truncated(AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code), num_layers)
        with init_empty_weights(include_buffers=False):
            self.model = AutoModelForCausalLM.from_config(config, dtype=self.dtype, trust_remote_code=trust_remote_code)
        self.model.eval()
        self.index = checkpoint_index(model_dir)
        self.sources = _checkpoint_names(self.model, self.index, model_dir)
        head = self.model.get_output_embeddings()
        for module, names in _blocks(self.model):
            if module is head and type(head) is torch.nn.Linear:
                head.forward = self._sliced_head(head)
                continue
            module.register_forward_pre_hook(self._loader(module, names))
            module.register_forward_hook(self._dropper(module, names))
            if type(module) is torch.nn.Embedding:
                module.register_forward_hook(lambda m, args, out: out.to(self.dtype))

    def __call__(self, input_ids, attention_mask=None):
        import torch

        with torch.no_grad():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)

    def get_input_embeddings_rows(self) -> int:
        return int(self.index[self.sources[_param_name(self.model, self.model.get_input_embeddings())]].shape[0])

    def _load(self, name: str, rows: tuple[int, int] | None = None, keep_dtype: bool = False):
        tensor = read_tensor(self.index[self.sources[name]], rows)
        if self.transform is not None:
            tensor = self.transform(name, tensor)
        return tensor if keep_dtype and tensor.is_floating_point() else tensor.to(self.dtype)

    def _loader(self, block, names):
        import torch

        keep = type(block) is torch.nn.Embedding  # a lookup table: its rows are cast on the way out instead

        def hook(module, args):
            for local in names:
                owner, attr = _owner(block, local)
                owner._parameters[attr] = _parameter(self._load(_full_name(self.model, block, local), keep_dtype=keep))
        return hook

    def _dropper(self, block, names):
        def hook(module, args, output):
            for local in names:
                owner, attr = _owner(block, local)
                p = owner._parameters[attr]
                owner._parameters[attr] = _parameter(p.new_empty(p.shape, device="meta"))
            release_freed_memory()
        return hook

    def _sliced_head(self, head):
        """The output layer's forward, reading its weight (often the tied embedding) HEAD_ROWS vocab rows at a time."""
        import torch

        name = _param_name(self.model, head)
        vocab = int(self.index[self.sources[name]].shape[0])
        bias = f"{_module_names(self.model)[id(head)]}.bias"

        def forward(x):
            out = x.new_empty((*x.shape[:-1], vocab), dtype=self.dtype)
            step = max(1, HEAD_BYTES // (4 * x.shape[-1]))
            for a in range(0, vocab, step):
                b = min(vocab, a + step)
                torch.matmul(x.to(self.dtype), self._load(name, (a, b)).T, out=out[..., a:b])
            if head.bias is not None:
                out += self._load(bias)
            release_freed_memory()
            return out
        return forward


HEAD_BYTES = 64 * 1024**2  # one slice of the output layer's weight in fp32


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim); a no-op elsewhere."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


class LoadedCausalLM:
    """The same interface over a model loaded whole in fp32: for checkpoints that cannot be streamed."""

    def __init__(self, model_dir: Path, trust_remote_code: bool = False, num_layers: int | None = None):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = truncated(AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code), num_layers)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32,
                                                          device_map="cpu", trust_remote_code=trust_remote_code).eval()

    def __call__(self, input_ids, attention_mask=None):
        import torch

        with torch.no_grad():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)

    def get_input_embeddings_rows(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])


def open_causal_lm(model_dir: Path, trust_remote_code: bool = False, sink=None, num_layers: int | None = None):
    """Streamed when every parameter is stored under its own name in the safetensors files (true for what
    transformers and edgetune's merge save); loaded whole otherwise (repos whose names transformers converts).
    `num_layers`: only the first N decoder layers (then the final norm and the output layer), for the F16 check's
    layer slice (export/gguf_slice.py)."""
    try:
        return StreamedCausalLM(model_dir, trust_remote_code=trust_remote_code, num_layers=num_layers)
    except KeyError as e:
        if sink is not None:
            from edgetune.events import Note

            sink(Note(f"{e.args[0]}: loading the whole model in fp32 instead of layer by layer", "warning"))
        return LoadedCausalLM(model_dir, trust_remote_code, num_layers)


def truncated(config, num_layers: int | None):
    """`config` with only its first `num_layers` decoder layers: the layer count and every per-layer list
    (layer_types, no_rope_layers, ...) cut to match. None leaves it whole."""
    if num_layers is None:
        return config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    total = text.num_hidden_layers
    for key, value in list(vars(text).items()):
        if isinstance(value, list) and len(value) == total:
            setattr(text, key, value[:num_layers])
    text.num_hidden_layers = num_layers
    return config


def _checkpoint_names(model, index: dict, model_dir) -> dict[str, str]:
    """Parameter name -> stored tensor name; tied parameters (an lm_head sharing the embedding) read the one stored."""
    sources: dict[str, str] = {}
    by_object: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_object.setdefault(id(p), []).append(name)
    tied = _tied_sources(model)
    for names in by_object.values():
        stored = [n for n in names if n in index] or [tied[n] for n in names if tied.get(n) in index]
        if not stored:
            raise KeyError(f"{model_dir}: no stored tensor for {names[0]}")
        for n in names:
            sources[n] = stored[0]
    return sources


def _tied_sources(model) -> dict[str, str]:
    """Tied parameter -> the parameter it shares storage with (transformers 5 ties after loading, not at build)."""
    keys = getattr(model, "_tied_weights_keys", None)
    tied = dict(keys) if isinstance(keys, dict) else {}
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if getattr(text, "tie_word_embeddings", False) and out is not None and inp is not None:
        tied[_param_name(model, out)] = _param_name(model, inp)
    return tied


def _blocks(model) -> list[tuple[object, list[str]]]:
    """Units that load together: each element of a ModuleList (decoder layers), and each other module that owns
    parameters directly (embeddings, final norm, lm_head)."""
    import torch

    blocks, covered = [], set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList):
            for i, child in enumerate(module):
                prefix = f"{name}.{i}"
                names = [n for n, _ in child.named_parameters()]
                if names:
                    blocks.append((child, names))
                    covered.add(prefix)
    for name, module in model.named_modules():
        if any(name == c or name.startswith(c + ".") for c in covered):
            continue
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if own:
            blocks.append((module, own))
    return blocks


def _owner(block, local: str):
    path, _, attr = local.rpartition(".")
    return (block.get_submodule(path) if path else block), attr


def _full_name(model, block, local: str) -> str:
    prefix = _module_names(model)[id(block)]
    return f"{prefix}.{local}" if prefix else local


def _module_names(model) -> dict[int, str]:
    cached = getattr(model, "_edgetune_module_names", None)
    if cached is None:
        cached = {id(m): n for n, m in model.named_modules()}
        model._edgetune_module_names = cached
    return cached


def _param_name(model, module) -> str:
    return f"{_module_names(model)[id(module)]}.weight"


def _parameter(tensor):
    import torch

    return torch.nn.Parameter(tensor, requires_grad=False)
