"""NER over the engine: prompts (every format), the CascadeNER pipeline (extract k runs, fuse ->
classify down the tree), and views of tagged documents."""
