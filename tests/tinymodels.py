"""Tiny offline stand-ins for real checkpoints, built in a second or two on CPU.

`build_tiny_tokenizer` trains a small byte-level BPE tokenizer with SmolLM2's special tokens and ChatML template,
so data, training and export code paths run without downloads.
"""
from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# SmolLM2-Instruct's template: ChatML, with a default system message when the conversation has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Training text: English, a little code and some non-ASCII, so common words get merges and nothing is unknown.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. Hello! How are you today? I am fine, thank you.
What is the capital of France? The capital of France is Paris. Water boils at 100 degrees Celsius.
You are a helpful AI assistant named SmolLM, trained by Hugging Face. system user assistant
Arr! Ahoy, matey! The sea be calm and the wind be fair. Shiver me timbers, that be a fine question.
Please answer the question in one short sentence. Translate the text. Summarize the following paragraph.
One, two, three, four, five, six, seven, eight, nine, ten. 1 + 1 = 2. 12 * 12 = 144. 3.14159
def add(a, b):
    return a + b

for i in range(10):
    print(f"value: {i}")

import json
with open("data.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
Café, naïve, résumé, Zürich, São Paulo, Ελληνικά, русский, 日本語, 中文, 한국어, emoji 🙂🚀 — “quotes” ‘single’ …
"""


def build_tiny_tokenizer(out_dir) -> Path:
    """Train and save a ~800-token byte-level BPE tokenizer (eos `<|im_end|>`, pad `<|endoftext|>`); returns out_dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHATML_TEMPLATE, model_max_length=2048)
    fast.save_pretrained(out_dir)
    return out_dir


def build_tiny_model(out_dir, tokenizer_dir, arch: str = "llama", seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A random 2-layer decoder (hidden 64) with the tiny tokenizer, saved as safetensors; ~0.2 M parameters.
    A larger `initializer_range` (e.g. 0.3) gives peaked logits: a model that learns a task to a clear margin."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         initializer_range=initializer_range)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir
