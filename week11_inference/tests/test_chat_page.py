"""The chat page: the SSE endpoint over a local model (the debug GPT, a tiny random Llama from a folder) and over a
mocked OpenAI-compatible server, its errors, and the page itself in headless Chromium."""

import json
import time

import pytest
import torch

from shared.data.text import CharTokenizer
from shared.models.decode import SamplingConfig, generate
from shared.models.gpt import GPT, GPTConfig
from shared.profiling import torch_threads

fastapi_testclient = pytest.importorskip("fastapi.testclient")  # the `infer` extra
httpx = pytest.importorskip("httpx")

from week11_inference.chat.__main__ import parse_args  # noqa: E402
from week11_inference.chat.app import (  # noqa: E402
    ChatError,
    HFDecodeModel,
    LocalBackend,
    OpenAIBackend,
    Piece,
    UpstreamError,
    create_app,
)
from week11_inference.chat.browser_check import browser_missing, browser_roundtrip, serve_in_thread  # noqa: E402

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?:\n'ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # every id decodes to a printable char


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine (``make test -n 2``) their
    per-op barriers were seen to cost ~0.5 s a decoding step: one thread, restored after."""
    with torch_threads(1):
        yield


def char_backend(block_size: int = 256) -> LocalBackend:
    """The debug GPT (random) over a character vocabulary, with the plain ``Role: text`` chat template."""
    torch.manual_seed(0)
    tok = CharTokenizer(ALPHABET)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16))
    return LocalBackend.from_model(model, tok, "debug-gpt")


def events(body: str) -> list[tuple[str, dict]]:
    """Parse a text/event-stream body into (event, data) pairs."""
    out = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        out.append((event, json.loads(data)))
    return out


def post_chat(client, **body) -> tuple[list[str], dict]:
    body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12, "temperature": 0, **body}
    with client.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        got = events(r.read().decode())
    assert [e for e, _ in got] == ["message"] * (len(got) - 1) + ["done"], got
    return [d["text"] for _, d in got[:-1]], got[-1][1]


def test_the_api_streams_chunks_then_a_done_event_with_the_token_count():
    backend = char_backend()
    client = fastapi_testclient.TestClient(create_app(backend))
    assert client.get("/").status_code == 200
    assert 'id="prompt"' in client.get("/").text
    assert client.get("/api/info").json() == {"backend": "local", "model": "debug-gpt"}
    chunks, done = post_chat(client)
    # the same tokens as the project's decoder on the templated prompt
    ids = backend.prompt_ids([{"role": "user", "content": "hello there"}])
    expected = generate(backend.model, ids, SamplingConfig(max_new_tokens=12))[0, ids.shape[1]:].tolist()
    full = backend.tokenizer.decode(expected)
    assert "".join(chunks) == full.split("\n\nUser:")[0].split("\n\nSystem:")[0]
    assert len(chunks) > 1
    assert all(chunks)
    assert done["tokens"] <= 12
    assert done["tokens_per_s"] > 0
    assert done["finish_reason"] in ("stop", "length")
    assert done["seconds"] >= done["ttft_s"] >= 0


def test_bad_requests_are_refused_with_a_message():
    client = fastapi_testclient.TestClient(create_app(char_backend(block_size=64)))
    r = client.post("/api/chat", json={"messages": []})
    assert r.status_code == 422
    assert "messages" in json.dumps(r.json()["detail"])
    r = client.post("/api/chat", json={"messages": [{"role": "robot", "content": "hi"}]})
    assert r.status_code == 422
    assert "role" in json.dumps(r.json()["detail"])
    r = client.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}], "temperature": -1})
    assert r.status_code == 422
    assert "temperature" in json.dumps(r.json()["detail"])
    r = client.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]})
    assert r.status_code == 400
    assert "last message must be the user's" in r.json()["detail"]
    r = client.post("/api/chat", json={"messages": [{"role": "user", "content": "a" * 60}], "max_tokens": 10})
    assert r.status_code == 400
    assert "context of 64" in r.json()["detail"]
    r = client.post("/api/chat", json={"messages": [{"role": "user", "content": "数"}]})  # not in the vocabulary
    assert r.status_code == 400
    assert "vocabulary" in r.json()["detail"]


def test_a_failure_in_the_middle_of_the_stream_becomes_an_error_event():
    class Broken:
        kind, name = "local", "broken"

        def open(self, messages, max_tokens, temperature):
            yield Piece("partial", 1)
            raise RuntimeError("the model fell over")

    client = fastapi_testclient.TestClient(create_app(Broken()))
    with client.stream("POST", "/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}) as r:
        got = events(r.read().decode())
    assert got == [("message", {"text": "partial"}), ("error", {"message": "RuntimeError: the model fell over"})]


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from shared.models.tiny import write_tiny_llama

    texts = ["hello there, how are you? I am fine, thank you.", "Café 😀 naïve — 日本語"] * 4
    return write_tiny_llama(tmp_path_factory.mktemp("chat") / "tiny-llama", texts, vocab_size=300, seed=3)


def test_a_hugging_face_folder_streams_what_its_own_generate_writes(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backend = LocalBackend(str(tiny_llama_dir))
    assert isinstance(backend.model, HFDecodeModel)
    client = fastapi_testclient.TestClient(create_app(backend))
    chunks, done = post_chat(client, max_tokens=16)
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir), local_files_only=True)
    enc = tok.apply_chat_template([{"role": "user", "content": "hello there"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = hf.generate(**enc, max_new_tokens=16, do_sample=False, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    reference = tok.decode(new, skip_special_tokens=True)
    assert reference
    assert "".join(chunks) == reference
    assert done["tokens"] == len(new)


def test_the_hf_adapter_decodes_like_hf_generate_with_and_without_its_cache_on_a_left_padded_batch():
    pytest.importorskip("transformers")
    from shared.models.decode import left_pad
    from shared.models.tiny import tiny_llama

    hf = tiny_llama(97, seed=0).eval()
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11]], pad_id=0)
    cfg = SamplingConfig(max_new_tokens=8)
    cached = generate(HFDecodeModel(hf), ids, cfg, mask, use_cache=True)
    rerun = generate(HFDecodeModel(hf), ids, cfg, mask, use_cache=False)
    reference = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                            eos_token_id=None, pad_token_id=0)
    assert torch.equal(cached, reference)
    assert torch.equal(rerun, reference)


def _openai_backend(handler):
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://upstream")
    return OpenAIBackend("http://upstream/v1", client=client)


def test_the_openai_backend_proxies_a_streamed_completion():
    seen = {}

    def handler(request):
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "HuggingFaceTB/SmolLM2-135M-Instruct"}]})
        seen.update(json.loads(request.content))
        deltas = [{"role": "assistant"}, {"content": "The cap"}, {"content": "ital is"}, {"content": " Paris."}]
        lines = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        lines.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        lines.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}})
        body = "".join(f"data: {json.dumps(x)}\n\n" for x in lines) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    client = fastapi_testclient.TestClient(create_app(_openai_backend(handler)))
    chunks, done = post_chat(client)
    assert chunks == ["The cap", "ital is", " Paris."]
    assert done["tokens"] == 5
    assert done["finish_reason"] == "stop"
    assert seen["stream"] is True
    assert seen["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert seen["messages"] == [{"role": "user", "content": "hello there"}]
    assert seen["max_tokens"] == 12


def test_openai_backend_errors_become_400_and_502():
    def refuses(request):
        return httpx.Response(400, json={"message": "max_tokens is too large"})

    backend = OpenAIBackend("http://upstream/v1", model="m",
                            client=httpx.Client(transport=httpx.MockTransport(refuses)))
    with pytest.raises(ChatError, match="max_tokens is too large"):
        backend.open([{"role": "user", "content": "hi"}], 8, 0.0)

    def down(request):
        raise httpx.ConnectError("connection refused")

    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m", client=httpx.Client(transport=httpx.MockTransport(down)))
    with pytest.raises(UpstreamError, match="make serve"):
        backend.open([{"role": "user", "content": "hi"}], 8, 0.0)
    r = fastapi_testclient.TestClient(create_app(backend)).post(
        "/api/chat", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502
    assert "cannot be reached" in r.json()["detail"]


def test_the_command_line_listens_on_loopback_only():
    assert parse_args([]).host == "127.0.0.1"
    with pytest.raises(SystemExit):
        parse_args(["--host", "0.0.0.0"])
    with pytest.raises(SystemExit):
        parse_args(["--model", "x", "--upstream", "http://127.0.0.1:8000/v1"])


class Slowed:
    """A backend whose pieces arrive 30 ms apart, so the page has to show them as they come."""

    def __init__(self, inner):
        self.inner, self.kind, self.name = inner, inner.kind, inner.name

    def open(self, messages, max_tokens, temperature):
        for piece in self.inner.open(messages, max_tokens, temperature):
            time.sleep(0.03)
            yield piece


@pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "browser present")
def test_the_page_streams_an_answer_in_headless_chromium():
    with serve_in_thread(create_app(Slowed(char_backend()))) as url:
        got = browser_roundtrip(url, "hello there", max_tokens=24, timeout_ms=10_000)
    assert got["model_label"] == "debug-gpt (local)"
    assert got["user_text"] == "hello there"
    assert got["answer"].strip()
    assert "tokens/s" in got["stats"]
    assert "tokens ·" in got["stats"]
    assert len(set(got["lengths"]) - {0}) > 1, f"the answer arrived in one piece: {got['lengths']}"
    assert "tokens/s" in got["status_line"]
    assert got["page_errors"] == []
