"""``python -m week11_inference.chat [--model NAME_OR_PATH | --upstream URL] [--port 8080]`` (``make chat``).

Serves the chat page on http://127.0.0.1:PORT/ (this machine only: the server has no authentication, so any other
host is refused). ``--model`` loads a model here: a registry name (default ``smollm2-135m-instruct``), a Hugging
Face folder (``models/week07/sft-v1``) or a checkpoint folder; ``--upstream`` proxies an OpenAI-compatible server
instead (``http://127.0.0.1:8000/v1``, vLLM from ``make serve``).
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "smollm2-135m-instruct"
LOOPBACK = ("127.0.0.1", "localhost")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m week11_inference.chat", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help=f"registry name, HF folder or checkpoint folder (default: {DEFAULT_MODEL})")
    src.add_argument("--upstream", help="an OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--upstream-model", help="the served model's name (default: the first of GET /models)")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: 8080)")
    p.add_argument("--host", default="127.0.0.1", help="only 127.0.0.1 is accepted (the page has no authentication)")
    p.add_argument("--device", default="cpu", help="where a --model runs (cpu, cuda)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads for a --model on CPU (default 0: torch's choice; 1 is faster on a busy "
                        "machine)")
    args = p.parse_args(argv)
    if args.host not in LOOPBACK:
        p.error(f"--host {args.host} refused: the chat server listens on 127.0.0.1 only (it has no authentication); "
                "reach it from elsewhere through an SSH tunnel (ssh -L 8080:127.0.0.1:8080 ...)")
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535, got {args.port}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import uvicorn

    from week11_inference.chat.app import LocalBackend, OpenAIBackend, create_app

    if args.upstream:
        backend = OpenAIBackend(args.upstream, model=args.upstream_model)
    else:
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        print(f"loading {args.model or DEFAULT_MODEL} ...", flush=True)
        try:
            backend = LocalBackend(args.model or DEFAULT_MODEL, device=args.device)
        except (ValueError, OSError) as e:  # not a model name or folder, or one that does not load
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"chat page: http://127.0.0.1:{args.port}/  ({backend.kind}: {backend.name}; Ctrl+C stops)", flush=True)
    uvicorn.run(create_app(backend), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
