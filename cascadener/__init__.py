"""CascadeNER in pure PyTorch: a from-scratch Qwen2 stack for LLM-based named entity recognition."""
from .checkpoint import CheckpointError, load_config, load_model
from .generate import Generation, SamplingParams, generate, stream
from .model import Qwen2, Qwen2Config
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["load_model", "load_config", "load_tokenizer", "Qwen2", "Qwen2Config", "Tokenizer", "CheckpointError",
           "SamplingParams", "Generation", "generate", "stream"]
