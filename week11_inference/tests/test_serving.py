"""The serving section's pure parts and its client against a fake OpenAI-compatible server in a thread: percentiles,
benchmark rows from streamed SSE chunks (token counts from ``usage`` or, without it, from chunks), greedy log-probs,
the HF comparison, SKIP rows without .venv-serve, and the errors for an unknown engine or a non-HF model."""

from __future__ import annotations

import http.server
import json
import math
import threading
import time

import numpy as np
import pytest

from shared.config import ConfigError
from shared.serve.client import (
    RequestResult,
    benchmark,
    completion_body,
    greedy_completion,
    parse_logprobs_choice,
    parse_sse,
    percentile,
    result_from_events,
    summarize,
)
from week11_inference.serving import ServingConfig, compare_greedy, run_serving, serving_checks


class _FakeOpenAI(http.server.BaseHTTPRequestHandler):
    """Streams one chunk per token (``tok{i} ``) with a final usage chunk unless the server was made without usage;
    a non-streamed request with ``logprobs`` gets vLLM-style ``token_id:N`` tokens."""

    usage = True
    requests: list[dict] = []

    def do_GET(self):
        self._json({"object": "list", "data": [{"id": "fake"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if self.path != "/v1/completions":
            self.send_error(503, "busy")
            return
        n = body["max_tokens"]
        if not body.get("stream"):
            ids = list(range(100, 100 + n))
            lp = {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": [-0.5] * n,
                  "top_logprobs": [{f"token_id:{i}": -0.5} for i in ids]}
            self._json({"choices": [{"text": "x" * n, "logprobs": lp, "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": n}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(n):
            self._event({"choices": [{"index": 0, "text": f"tok{i} ", "finish_reason": None}]})
            time.sleep(0.002)
        self._event({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
        if self.usage:
            self._event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n}})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, ev):
        self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
        self.wfile.flush()

    def _json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture(params=[True, False], ids=["usage", "no-usage"])
def fake_server(request):
    handler = type("H", (_FakeOpenAI,), {"usage": request.param, "requests": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", handler
    srv.shutdown()
    srv.server_close()


def test_percentile_matches_numpy():
    xs = [0.9, 0.1, 0.5, 2.0, 0.3, 1.1, 0.7]
    for q in (0, 5, 50, 95, 100):
        assert percentile(xs, q) == pytest.approx(np.percentile(xs, q), abs=1e-12)
    assert percentile([3.0], 95) == 3.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="0-100"):
        percentile(xs, 101)


def test_sse_and_result_from_events():
    lines = ["", ": keep-alive", 'data: {"choices": [{"text": "Hel"}]}', "",
             'data: {"choices": [{"text": "lo", "finish_reason": "length"}]}',
             'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}', "data: [DONE]",
             'data: {"never": "read"}']
    events = list(parse_sse(lines))
    assert len(events) == 3
    res = result_from_events(zip([10.5, 10.9, 11.0], events, strict=True), t_send=10.0, t_end=11.0)
    assert (res.text, res.completion_tokens, res.prompt_tokens, res.tokens_from) == ("Hello", 2, 3, "usage")
    assert res.ttft_s == pytest.approx(0.5)
    assert res.latency_s == pytest.approx(1.0)
    assert res.finish_reason == "length"
    assert res.decode_tok_s == pytest.approx(1 / 0.5)
    no_usage = result_from_events(zip([10.5, 10.9], events[:2], strict=True), 10.0, 11.0)
    assert (no_usage.completion_tokens, no_usage.tokens_from, no_usage.prompt_tokens) == (2, "chunks", None)
    with pytest.raises(ValueError, match="not a JSON event"):
        list(parse_sse(["data: {oops"]))


def test_summarize_rows():
    ok = [RequestResult(True, latency_s=t, ttft_s=t / 4, completion_tokens=10) for t in (1.0, 2.0, 3.0)]
    bad = RequestResult(False, 0.1, error="HTTP 503: busy")
    row = summarize([*ok, bad], wall_s=4.0, concurrency=4, engine="fake")
    assert list(row)[:3] == ["engine", "concurrency", "requests"]
    assert (row["requests"], row["failed"], row["tokens"], row["tokens_from"]) == (4, 1, 30, "usage")
    assert row["agg_tok_s"] == pytest.approx(30 / 4.0)
    assert row["latency_p50_s"] == pytest.approx(2.0)
    assert row["latency_p95_s"] == pytest.approx(np.percentile([1, 2, 3], 95))
    assert row["ttft_p50_s"] == pytest.approx(0.5)
    assert row["req_tok_s"] == pytest.approx(np.mean([10, 5, 10 / 3]))
    assert row["first_error"] == "HTTP 503: busy"
    empty = summarize([bad], 1.0, 1)
    assert math.isnan(empty["agg_tok_s"])
    assert empty["tokens_from"] == "none"


def test_benchmark_against_fake_server(fake_server):
    url, handler = fake_server
    rows = benchmark(url, "fake", ["a", "b", "c"], max_tokens=5, levels=(1, 4), single_requests=2,
                     extra={"ignore_eos": True}, engine="fake")
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert [r["requests"] for r in rows] == [2, 4]
    assert all(r["failed"] == 0 for r in rows)
    assert [r["tokens"] for r in rows] == [10, 20]
    assert {r["tokens_from"] for r in rows} == {"usage" if handler.usage else "chunks"}
    for r in rows:
        assert 0 < r["ttft_p50_s"] < r["latency_p50_s"] <= r["latency_p95_s"] < 5
        assert r["agg_tok_s"] > 0
    assert len(handler.requests) == 1 + 2 + 4  # warm-up, 2 single, 4 at once
    assert handler.requests[-1]["ignore_eos"] is True
    assert handler.requests[-1]["temperature"] == 0.0
    assert handler.requests[-1]["stream_options"] == {"include_usage": True}


def test_benchmark_reports_failures(fake_server):
    url, _ = fake_server
    rows = benchmark(url + "/nope", "fake", ["a"], max_tokens=2, levels=(2,), warmup=False)
    assert rows[0]["failed"] == 2
    assert rows[0]["first_error"].startswith("HTTP 503")


def test_greedy_completion_logprobs(fake_server):
    url, handler = fake_server
    got = greedy_completion(url, "fake", "p", max_tokens=4, extra={"return_tokens_as_token_ids": True})
    assert got.token_ids == [100, 101, 102, 103]
    assert got.logprobs == [-0.5] * 4
    assert got.prompt_tokens == 7
    assert handler.requests[-1]["logprobs"] == 2
    assert handler.requests[-1]["stream"] is False
    text_tokens = parse_logprobs_choice({"text": " Paris", "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.1]}})
    assert text_tokens.token_ids is None
    with pytest.raises(ValueError, match="no logprobs"):
        parse_logprobs_choice({"text": "x", "logprobs": None})
    assert "stream_options" not in completion_body("m", "p", 3, stream=False)


def test_compare_greedy():
    same = compare_greedy([1, 2, 3], [1, 2, 3], [-0.1, -0.2, -0.3], [-0.1001, -0.2, -0.3], None, 1e-3, 0.1)
    assert same["equal_prefix"] == 3
    assert same["agrees"]
    assert same["max_abs_dlogprob"] == pytest.approx(1e-4)
    # France: HF picks "The" (p 0.152), the engine "L" (p 0.140): a margin of ln(0.152/0.140) = 0.08 nats
    tie = compare_greedy([5, 6, 7], [9, 6, 7], [-1.97, -0.1, -0.1], [-1.966, -0.1, -0.1], math.log(0.152 / 0.140),
                         0.01, 0.1)
    assert (tie["equal_prefix"], tie["equal_tokens"], tie["near_tie"], tie["agrees"]) == (0, 2, True, True)
    wide = compare_greedy([5, 6], [9, 6], [-0.5, -0.1], [-0.5, -0.1], 2.0, 0.01, 0.1)
    assert not wide["near_tie"]
    assert not wide["agrees"]
    off = compare_greedy([1, 2], [1, 2], [-0.1, -0.2], [-0.1, -0.9], None, 0.25, 0.1)
    assert off["max_abs_dlogprob"] == pytest.approx(0.7)
    assert not off["agrees"]
    assert not compare_greedy([], [], [], [], None, 1.0, 0.1)["agrees"]


def test_skip_rows_without_serve_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFS_SERVE_VENV", str(tmp_path / "no-venv"))
    res = run_serving(ServingConfig(), tmp_path / "out")
    assert [e["engine"] for e in res.engines] == ["vllm", "llama_cpp"]
    assert {e["status"] for e in res.engines} == {"SKIP"}
    assert all("make serve-env" in e["reason"] and "no-venv" in e["reason"] for e in res.engines)
    assert res.bench == []
    assert len(res.notes) == 2
    checks = serving_checks(res)
    assert len(checks) == 4
    assert {c.status for c in checks} == {"SKIP"}


def test_unknown_engine(tmp_path):
    with pytest.raises(ConfigError, match="unknown engine 'tgi'. Choices: vllm, llama_cpp"):
        run_serving(ServingConfig(engines=["vllm", "tgi"]), tmp_path)
    with pytest.raises(ConfigError, match="levels"):
        ServingConfig(concurrency=[0]).validate()


def test_serve_cli_errors(tmp_path, monkeypatch, capsys):
    from week11_inference.serve_cli import main

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "bin" / "vllm").write_text("")
    monkeypatch.setenv("AIFS_SERVE_VENV", str(venv))
    assert main(["--model", str(tmp_path), "--engine", "tgi"]) == 2
    assert "Choices: vllm, llama_cpp" in capsys.readouterr().err
    assert main(["--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a Hugging Face model folder" in err
    assert "shared.models.hf.save_hf" in err
    assert main(["--model", "no-such-model"]) == 2
    assert "not a registered model" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
