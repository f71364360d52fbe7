#!/usr/bin/env python3
"""Exits 0 when two JSON files hold the same data, the "versions" stamp of
the tools that wrote them aside (a newer transformers that renders the same
bytes is no failure); else prints the first differing path and exits 1.

    python3 tests/ref/same_json.py MADE.json COMMITTED.json"""
import json
import sys


def first_diff(a, b, path="$"):
    if type(a) is not type(b):
        return path
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}"
            d = first_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path} (length {len(a)} vs {len(b)})"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else path


def main():
    made, committed = (json.load(open(p)) for p in sys.argv[1:3])
    for j in (made, committed):
        if isinstance(j, dict):
            j.pop("versions", None)
    d = first_diff(made, committed)
    if d:
        print(f"{sys.argv[1]} and {sys.argv[2]} differ at {d}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
