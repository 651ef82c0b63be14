"""Data doctor: ``python -m shared.data [NAME ...] [--check]`` (``make data``).

Lists every registered dataset with its state (verified / missing / corrupt), where each file was
found, its size and licence, fetches what is missing and replaces what is corrupt (mirror -> download; a corrupt
file is only replaced by a copy that verifies, and kept when none can be had) unless ``--check`` is given. A large
on-demand dataset (TinyStories, 2.2 GB) is only listed unless it is named.
Then lists the packed data versions below the runs root (their manifests: name, documents, tokens, tokenizer).
Exits 1 if any dataset it was asked to fetch is not fully verified afterwards.
"""

from __future__ import annotations

import argparse
import sys

from shared.data.fetch import DatasetError, inspect, prepare_file, repair_command
from shared.data.manifest import list_versions
from shared.data.registry import REGISTRY, get_spec
from shared.paths import data_root, runs_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.data", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="datasets to check (default: all registered)")
    parser.add_argument("--check", action="store_true", help="only report; fetch and replace nothing")
    args = parser.parse_args(argv)
    names = args.names or sorted(REGISTRY)
    root = data_root()
    print(f"cache: {root}")
    ok = True
    for name in names:
        spec = get_spec(name)
        print(f"\n{name}: {spec.description}\n  licence: {spec.license}\n  size: {spec.size / 2**20:.1f} MiB")
        listed_only = spec.on_demand and name not in args.names
        for state in inspect(spec, root):
            if state.state == "missing" and listed_only:
                print(f"  [missing ] {state.spec.relpath} (on demand: `python -m shared.data {name}` or the run "
                      "that reads it fetches it)")
                continue
            if state.state == "corrupt" and (args.check or listed_only):
                print(f"  [corrupt ] {state.spec.relpath} ({state.path} does not match its checksum; "
                      f"`{repair_command(state.spec)}` replaces it with a verified copy)")
                ok = False
                continue
            if state.state in ("missing", "corrupt") and not args.check:
                try:
                    state = prepare_file(state.spec, root, repair=True)
                except DatasetError as e:
                    print(f"  [{state.state:8s}] {state.spec.relpath}\n    {_indent(str(e))}")
                    ok = False
                    continue
            ok &= state.state == "verified"
            where = f" ({state.source})" if state.source else ""
            if state.repaired:
                print(f"  [repaired] {state.spec.relpath}{where}\n    the cached copy was corrupt ({state.repaired}); "
                      f"replaced by this verified copy")
                continue
            print(f"  [{state.state:8s}] {state.spec.relpath}{where}")
    versions = list_versions(runs_root())
    print(f"\ndata versions below {runs_root()}: {len(versions)}")
    for v in versions:
        print(f"  {v['name']:4s} {v['documents']:>9,} documents {v['tokens']:>12,} tokens  tokenizer "
              f"{v['tokenizer_sha256']}  {v['path']}")
    return 0 if ok else 1


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


if __name__ == "__main__":
    sys.exit(main())
