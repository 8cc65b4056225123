"""NER over the engine: prompts (every format), the CascadeNER pipeline (extract k runs, fuse ->
classify down the tree), views of tagged documents, and the record of the prompts an adapter was
trained on (trained.py)."""
