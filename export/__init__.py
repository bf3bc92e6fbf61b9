"""edgetune.export: GGUF (convert, quantize, verify) and Ollama Modelfile writers."""
