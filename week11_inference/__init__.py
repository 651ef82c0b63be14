"""Week 11: inference. A KV cache and sampler written by hand (in ``shared``), attention backends, a small
continuous-batching engine with a paged KV cache (``shared.serve``), vLLM and llama.cpp serving on localhost,
quantised and exported inference, a chat page, and an inference memo generated from the measurements."""
