"""CascadeNER in pure PyTorch: a from-scratch Qwen2 stack for LLM-based named entity recognition.

The model-side names below are imported lazily, so the torch-free parts (cascadener.geic,
cascadener.data, the downloader) load without torch.
"""
from importlib import import_module

_EXPORTS = {
    "load_model": "qwen2.checkpoint", "load_config": "qwen2.checkpoint", "CheckpointError": "qwen2.checkpoint",
    "load_tokenizer": "qwen2.tokenizer", "Tokenizer": "qwen2.tokenizer",
    "Qwen2": "qwen2.model", "Qwen2Config": "qwen2.model",
    "SamplingParams": "engine.sampling", "Generation": "engine.scheduler", "generate": "engine.scheduler",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cascadener' has no attribute {name!r}")
