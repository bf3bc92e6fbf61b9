"""Sampling settings shared by every runtime edgetune drives (llama.cpp, onnxruntime, transformers)."""

# Deployed sampling default, as Ollama ships it: a mild repetition penalty. Greedy decoding of small quantized models
# loops without one: benchmarks/stop_rate.py on the demo run, 33 prompts, replies that never stopped: Q4_K_M 4 at
# 1.0 vs 0 at 1.1, Q8_0 3 vs 1. The Modelfile, `edgetune chat` and the export's stop-at-EOS check all use it.
REPEAT_PENALTY = 1.1
