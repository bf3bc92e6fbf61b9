"""edgetune: QLoRA fine-tune an open LLM on a consumer machine and deploy it offline."""

__version__ = "0.1.0"
