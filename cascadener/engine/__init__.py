"""The inference engine: conversations and token ids in, answers out, batched and prefix-cached.
Knows token ids, policies and devices; never entities, marks or labels.

    chat.py            ChatEngine: conversations + a policy per request -> Completions (the pipeline's door)
    scheduler.py       the one decoding loop: admission, prefill through the prefix cache, decode step, retirement
    constraint.py      the protocol a constrained request speaks (allowed tokens, advance, optional draft)
    sampling.py        SamplingParams and the one sampler (greedy, temperature/top-k/top-p, draft verification)
    kv.py              KVStore: the keys/values of the running rows and the moves on them
    graphs.py          the one-token step with static shapes, recorded as a CUDA graph on a GPU
    prefix_cache.py    the radix tree of computed prompt prefixes
    restricted_head.py the LM head over the allowed tokens only
    fastlinear.py      the linears' inference forms (CPU: oneDNN-packed or int8)
    device.py          auto | cpu | cuda[:N]
"""
