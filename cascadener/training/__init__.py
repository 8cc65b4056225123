"""Supervised fine-tuning of the extractor and the classifier with hand-written LoRA (train.py).

mixture.py    several datasets (train.py --mixture) -> sentences, each under a type list drawn across them
examples.py   labelled documents -> chat examples -> token ids with a loss mask
batches.py    which examples each step trains on; micro-batch tensors (right padding)
loop.py       model setup, loss on answer tokens, the optimizer step, the run
evaluation.py dev span F1 through the inference pipeline
checkpointing.py  atomic checkpoints, the adapter, the best adapter, merged weights
distributed.py    torchrun data parallelism: one all_reduce of the LoRA gradients per step
config.py     TrainConfig: every setting of a run
"""
