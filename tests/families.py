"""Tiny random checkpoints of each model family edgetune supports, built offline in a second or two.

Each is the family's real transformers architecture class with its hard features switched on (tied embeddings,
qk-norm, sliding-window layers, partial rotary, llama3 / LongRoPE scaling, no-RoPE layers), the family's real chat
template (TRL's `trl/chat_templates/*.jinja`, or tests/data/templates/ for families TRL does not ship), its special
tokens as real special tokens, and a tokenizer of the family's kind: byte-level BPE with the family's own split
regex, or a real SentencePiece model trained here with the `sentencepiece` package (Gemma, Llama 2 / Mistral /
Phi-3.5 style). Weights get a large init so logits are peaked and greedy decoding is deterministic.

    from families import FAMILIES, build_family
    model_dir = build_family("gemma3", tmp_path / "gemma3")
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tinymodels import _CORPUS

TEMPLATES = Path(__file__).parent / "data" / "templates"

# Pre-tokenizer split regexes exactly as each family's tokenizer.json spells them.
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=512, rms_norm_eps=1e-6, initializer_range=0.3)


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str
    tokenizer: str  # bpe-llama3 | bpe-qwen2 | bpe-gpt4o | spm-gemma | spm-llama
    template: str  # trl:NAME (trl/chat_templates/NAME.jinja) or file:NAME (tests/data/templates/NAME.jinja)
    special: tuple[str, ...]  # special tokens, in id order after the base vocab
    eos: str  # tokenizer.eos_token
    end_of_turn: str  # what the template puts after an assistant reply
    generation_eos: tuple[str, ...]  # generation_config.eos_token_id (every id that ends generation)
    bos: str | None = None
    pad: str | None = None
    add_bos: bool = False  # the tokenizer adds bos itself (Llama 3, Gemma, Llama 2 / Mistral)
    plain_added: tuple[str, ...] = ()  # added tokens that are not special (Qwen3's <think> tags)
    rstrip: tuple[str, ...] = ()  # special tokens that swallow the whitespace after them (Phi-3.5's role markers)
    config: dict = field(default_factory=dict)


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("qwen3", "qwen3", "bpe-qwen2", "trl:qwen3",
           special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), plain_added=("<think>", "</think>"),
           eos="<|im_end|>", end_of_turn="<|im_end|>", generation_eos=("<|im_end|>", "<|endoftext|>"),
           pad="<|endoftext|>",
           config=dict(num_hidden_layers=2, head_dim=32, tie_word_embeddings=True,  # qk-norm is built in
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    Family("llama3_2", "llama", "bpe-llama3", "trl:llama3_2",
           special=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"),
           bos="<|begin_of_text|>", eos="<|eot_id|>", end_of_turn="<|eot_id|>", add_bos=True,
           generation_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), pad="<|end_of_text|>",
           config=dict(num_hidden_layers=2, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 64})),
    Family("gemma3", "gemma3_text", "spm-gemma", "trl:gemma3",
           special=("<start_of_turn>", "<end_of_turn>"),
           bos="<bos>", eos="<eos>", end_of_turn="<end_of_turn>", add_bos=True, pad="<pad>",
           generation_eos=("<eos>", "<end_of_turn>"),
           # 6 layers: Gemma 3's pattern of five sliding-window layers and one global layer, window 16 tokens
           config=dict(num_hidden_layers=6, head_dim=32, query_pre_attn_scalar=32, sliding_window=16,
                       tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh",
                       rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})),
    Family("phi4_mini", "phi3", "bpe-gpt4o", "file:phi4_mini",
           special=("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
           eos="<|endoftext|>", end_of_turn="<|end|>", generation_eos=("<|end|>", "<|endoftext|>"),
           pad="<|endoftext|>",
           # partial rotary (3/4 of each head) and LongRoPE (long factors past 1024 tokens, 4x context)
           # heads of 128 as in Phi-4-mini: onnxruntime's rotary kernel needs (rotary dims / 2) % 8 == 0
           config=dict(num_hidden_layers=2, tie_word_embeddings=True, max_position_embeddings=4096,
                       hidden_size=256, num_attention_heads=2, num_key_value_heads=1, intermediate_size=256,
                       initializer_range=0.15,  # 4x the width of the others: half the init keeps logits alike
                       original_max_position_embeddings=1024,
                       rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.75,
                                        "short_factor": [1.0 + 0.01 * i for i in range(48)],
                                        "long_factor": [1.0 + 0.1 * i for i in range(48)],
                                        "original_max_position_embeddings": 1024})),
    Family("phi3_5", "phi3", "spm-llama", "trl:phi3_5",
           special=("<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"),
           rstrip=("<|assistant|>", "<|end|>", "<|system|>", "<|user|>"),
           bos="<s>", eos="<|endoftext|>", end_of_turn="<|end|>", add_bos=True, pad="<|endoftext|>",
           generation_eos=("<|end|>", "<|endoftext|>"),
           config=dict(num_hidden_layers=2, tie_word_embeddings=False, max_position_embeddings=4096,
                       original_max_position_embeddings=1024,
                       rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                        "short_factor": [1.0 + 0.05 * i for i in range(8)],
                                        "long_factor": [1.0 + 0.5 * i for i in range(8)],
                                        "original_max_position_embeddings": 1024})),
    Family("smollm3", "smollm3", "bpe-llama3", "file:smollm3",
           special=("<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"),
           plain_added=("<think>", "</think>"),
           eos="<|im_end|>", end_of_turn="<|im_end|>", generation_eos=("<|im_end|>",), pad="<|end_of_text|>",
           # a 4k context, as its template's default system block alone takes ~700 tokens of this tiny tokenizer
           config=dict(num_hidden_layers=4, tie_word_embeddings=True, no_rope_layer_interval=4,
                       max_position_embeddings=4096,
                       no_rope_layers=[1, 1, 1, 0],  # every 4th layer has no RoPE
                       rope_parameters={"rope_type": "default", "rope_theta": 2000000.0})),
    Family("qwen2", "qwen2", "bpe-qwen2", "trl:qwen2_5",
           special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
           eos="<|im_end|>", end_of_turn="<|im_end|>", generation_eos=("<|im_end|>", "<|endoftext|>"),
           pad="<|endoftext|>", config=dict(num_hidden_layers=2, tie_word_embeddings=True)),
    Family("mistral", "mistral", "spm-llama", "file:mistral_v0_3",
           special=("[INST]", "[/INST]"),
           bos="<s>", eos="</s>", end_of_turn="</s>", add_bos=True, generation_eos=("</s>",),
           config=dict(num_hidden_layers=2, tie_word_embeddings=False, sliding_window=None)),
]}


def chat_template(family: Family) -> str:
    kind, name = family.template.split(":", 1)
    if kind == "trl":
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def build_family_tokenizer(family: Family, out_dir) -> Path:
    """Train and save the family's tiny tokenizer (with its chat template and special tokens); returns out_dir."""
    out_dir = Path(out_dir)
    if family.tokenizer.startswith("spm-"):
        tok = _spm_tokenizer(family, out_dir / "_spm")
    else:
        tok = _bpe_tokenizer(family)
    tok.chat_template = chat_template(family)
    tok.save_pretrained(out_dir)
    return out_dir


def _bpe_tokenizer(family: Family):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    split = {"bpe-llama3": LLAMA3_SPLIT, "bpe-qwen2": QWEN2_SPLIT, "bpe-gpt4o": GPT4O_SPLIT}[family.tokenizer]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in family.special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.plain_added])
    if family.add_bos:
        from tokenizers import processors

        tok.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B",
            special_tokens=[(family.bos, tok.token_to_id(family.bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos,
                                   pad_token=family.pad, model_max_length=4096)


def _spm_tokenizer(family: Family, work: Path):
    """A real SentencePiece BPE model (byte fallback), converted by transformers as the family's tokenizer class."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    work.mkdir(parents=True, exist_ok=True)
    (work / "corpus.txt").write_text(_CORPUS * 8, encoding="utf-8")
    gemma = family.tokenizer == "spm-gemma"
    pieces = dict(pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>") if gemma else \
        dict(pad_id=-1, eos_piece="</s>", bos_piece="<s>", unk_piece="<unk>")
    ids = dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3) if gemma else dict(unk_id=0, bos_id=1, eos_id=2)
    spm.SentencePieceTrainer.train(
        input=str(work / "corpus.txt"), model_prefix=str(work / "spm"), vocab_size=700, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, add_dummy_prefix=not gemma,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        user_defined_symbols=list(family.special), minloglevel=2, **ids, **pieces)
    src = work / "hf"
    src.mkdir(exist_ok=True)
    (src / "tokenizer.model").write_bytes((work / "spm.model").read_bytes())
    config = {"tokenizer_class": "GemmaTokenizer" if gemma else "LlamaTokenizer", "bos_token": family.bos,
              "eos_token": family.eos, "unk_token": "<unk>", "add_bos_token": family.add_bos,
              "add_eos_token": False, "legacy": False, "model_max_length": 4096}
    if family.pad:
        config["pad_token"] = family.pad
    (src / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(src)
    if not gemma:  # as Llama 2 / Mistral v0.x / Phi-3.5 ship tokenizer.json: "▁" always prepended by the normalizer
        from tokenizers import normalizers

        tok.backend_tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        tok.backend_tokenizer.pre_tokenizer = None
    from tokenizers import AddedToken

    tok.add_special_tokens({"additional_special_tokens": [
        AddedToken(t, special=True, normalized=False, rstrip=t in family.rstrip)
        for t in family.special if t not in (family.pad,)]})
    return tok


def build_family(name: str, out_dir, seed: int = 0, tokenizer_dir=None, **overrides) -> Path:
    """A random checkpoint of family `name` (safetensors + tokenizer + generation_config) in out_dir; `overrides`
    change its config (e.g. num_hidden_layers)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    family = FAMILIES[name]
    out_dir = Path(out_dir)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else build_family_tokenizer(family, out_dir / "_tokenizer")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    eos_ids = [tok.convert_tokens_to_ids(t) for t in family.generation_eos]
    settings = {**_SMALL, **family.config, "vocab_size": len(tok), "eos_token_id": eos_ids,
                "bos_token_id": tok.bos_token_id, "pad_token_id": tok.pad_token_id, **overrides}
    torch.manual_seed(seed)
    config = AutoConfig.for_model(family.model_type, **settings)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # norms start at 1 (Gemma: 0) and biases at 0: randomise them so conversion is checked
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname:
                p.add_(torch.randn_like(p) * 0.1)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos_ids,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def build_lfm2(out_dir, tokenizer_dir):
    """LFM2 (hybrid convolution + attention): llama.cpp runs it, edgetune cannot export it yet."""
    import torch
    from transformers import AutoTokenizer, Lfm2Config, Lfm2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = Lfm2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        layer_types=["conv", "full_attention"], eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    Lfm2ForCausalLM(config).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
