"""Training engines behind one small protocol: Unsloth (CUDA) and transformers+PEFT(+bitsandbytes) elsewhere."""
from edgetune.engines.base import Engine, Precision, choose_precision
from edgetune.engines.choose import select

__all__ = ["Engine", "Precision", "choose_precision", "select"]
