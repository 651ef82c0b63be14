"""The chat page (``make chat``): a FastAPI server on 127.0.0.1 serving one static page that streams answers from a
model in this process (:class:`~week11_inference.chat.app.LocalBackend`) or from an OpenAI-compatible server
(:class:`~week11_inference.chat.app.OpenAIBackend`, e.g. vLLM from ``make serve``)."""
