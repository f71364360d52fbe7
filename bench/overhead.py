#!/usr/bin/env python3
"""Share of step time outside compute, from a run's metrics.jsonl.

perf/step_s is the coordinator's wall time of a step; perf/compute_s the
workers' own handling time on the step's critical path (the longest call
of each group of parallel requests), less the time data-parallel replicas
spend in all-reduces (sending, the relay, waiting for the slowest
replica), which is counted with transport; perf/transport_s the rest of those
calls (sending, queueing, receiving); perf/serialize_s packing and
unpacking on the coordinator. What remains is the coordinator's own work
(advantages, bookkeeping) and waiting.
usage: bench/overhead.py RUN_DIR [RUN_DIR ...]"""
import json
import statistics
import sys

for run in sys.argv[1:]:
    rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    rows = [r for r in rows if "perf/step_s" in r and "eval/accuracy" not in r]
    if not rows:
        continue
    step = sum(r["perf/step_s"] for r in rows)
    comp = sum(r["perf/compute_s"] for r in rows)
    trans = sum(r["perf/transport_s"] for r in rows)
    ser = sum(r["perf/serialize_s"] for r in rows)
    print(f"{run}: {len(rows)} steps, median step {statistics.median(r['perf/step_s'] for r in rows)*1e3:.1f} ms; "
          f"compute {comp/step:.1%}, transport+queueing {trans/step:.1%}, "
          f"serialization {ser/step:.2%}, coordinator and waiting {(step-comp-trans-ser)/step:.1%}")
