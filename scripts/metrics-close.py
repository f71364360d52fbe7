#!/usr/bin/env python3
"""Compares two metrics files (JSON lines with a "step" each, as
scripts/configs-short.sh writes them) key by key.

    scripts/metrics-close.py WANT GOT [--steps FIRST-LAST] [--rel R]

Every key of every step in FIRST..LAST must be in both, with
|got - want| <= R * max(1, |want|, |got|). Prints one line per step and the
worst key; exits 1 on a difference, naming the step, the key and both
values, and 2 on a missing file or step."""
import argparse
import json
import sys


def load(path):
    steps = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except ValueError as e:
                sys.exit(f"{path}:{n}: not JSON ({e})")
            steps.setdefault(d["step"], {}).update(d)
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("want")
    ap.add_argument("got")
    ap.add_argument("--steps", default="0-3")
    ap.add_argument("--rel", type=float, default=1e-4)
    a = ap.parse_args()
    first, last = (int(x) for x in a.steps.split("-"))
    try:
        want, got = load(a.want), load(a.got)
    except OSError as e:
        print(f"metrics-close: {e}", file=sys.stderr)
        return 2
    bad = 0
    for s in range(first, last + 1):
        if s not in want or s not in got:
            print(f"step {s}: missing in {a.want if s not in want else a.got}")
            return 2
        w, g = want[s], got[s]
        worst, worst_key = 0.0, None
        for k in sorted(set(w) | set(g)):
            if k.startswith("perf/"):
                continue
            if k not in w or k not in g:
                print(f"step {s}: \"{k}\" only in {a.got if k in g else a.want}")
                bad = 1
                continue
            x, y = float(w[k]), float(g[k])
            d = abs(x - y) / max(1.0, abs(x), abs(y))
            if d > worst:
                worst, worst_key = d, k
            if d > a.rel:
                print(f"step {s}: \"{k}\" is {y!r}, want {x!r} (relative {d:.3g} > {a.rel:g})")
                bad = 1
        print(f"step {s}: worst relative difference {worst:.3g}" + (f" ({worst_key})" if worst_key else ""))
    return bad


if __name__ == "__main__":
    sys.exit(main())
