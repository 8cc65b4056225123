"""The inference engine: conversations and token ids in, answers out, batched and prefix-cached.
Knows token ids, policies and devices; never entities, marks or labels."""
