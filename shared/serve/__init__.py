"""Serving: the project's own engine (a paged KV cache and continuous batching over the shared GPT) and the helpers
that start, wait for and stop an OpenAI-compatible server (vLLM, llama.cpp) on localhost and measure it."""
