"""The Qwen2 model: config and decoder, checkpoints (safetensors, names, errors), tokenizer and ChatML,
LoRA, and where checkpoints are found or downloaded. Knows nothing about NER or the engine."""
