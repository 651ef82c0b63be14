"""Data doctor: ``python -m shared.data [NAME ...] [--check]`` (``make data``).

Lists every registered dataset with its state (verified / missing / corrupt), where each file was
found, its size and licence, and fetches what is missing (cache -> mirror -> download) unless
``--check`` is given. A large on-demand dataset (TinyStories, 2.2 GB) is only listed unless it is named.
Exits 1 if any dataset it was asked to fetch is not fully verified afterwards.
"""

from __future__ import annotations

import argparse
import sys

from shared.data.fetch import DatasetError, inspect, prepare_file
from shared.data.registry import REGISTRY, get_spec
from shared.paths import data_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.data", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="datasets to check (default: all registered)")
    parser.add_argument("--check", action="store_true", help="only report; fetch nothing")
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
            if state.state == "missing" and not args.check:
                try:
                    state = prepare_file(state.spec, root)
                except DatasetError as e:
                    print(f"  [missing ] {state.spec.relpath}\n    {str(e).replace(chr(10), chr(10) + '    ')}")
                    ok = False
                    continue
            ok &= state.state == "verified"
            where = f" ({state.source})" if state.source else ""
            print(f"  [{state.state:8s}] {state.spec.relpath}{where}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
