#!/usr/bin/python3
"""bench/dash_soak.py: does `plumb dash` hold its memory under load?

Makes two real runs (a short GRPO run on the arithmetic task, metrics to a
private redis-server), then serves them twice at once: one `plumb dash
--runs` over the run folders and one `plumb dash --redis` over the
registry. For SECONDS (default 600) two client threads per server send
every kind of request the page sends, in turn: the run list, a run, its
metrics (all, some keys, a step range), samples, both exports, the static
files, an event stream held open for a moment, and bad ones (400, 404).
The servers' resident memory (VmRSS) is read every 10 s.

Prints, per source: requests, replies with an unexpected status, RSS after
the first minute (the reference: caches and allocator arenas are warm by
then), RSS at the end and at its peak, and end / reference.

usage: /usr/bin/python3 bench/dash_soak.py [--plumb build/plumb] [--seconds 600]
Standard library only (Debian's python3)."""
import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


REQUESTS = [
    ("/api/runs", 200),
    ("/api/runs/soak1", 200),
    ("/api/runs/soak1/metrics", 200),
    ("/api/runs/soak2/metrics?keys=rollout/reward_mean,train/loss", 200),
    ("/api/runs/soak1/metrics?from=10&to=40", 200),
    ("/api/runs/soak1/samples", 200),
    ("/api/runs/soak2/samples?step=20", 200),
    ("/api/runs/soak1/export?format=csv", 200),
    ("/api/runs/soak2/export?format=jsonl", 200),
    ("/api/source", 200),
    ("/", 200),
    ("/static/dash.js", 200),
    ("/static/chart.js", 200),
    ("/api/runs/nope", 404),
    ("/api/runs/soak1/metrics?from=x", 400),
    ("/api/runs/soak1/export?format=xml", 400),
    ("/api/runs/..%2fetc", 400),
    ("/nowhere", 404),
]


def client(port, stop, counts, lock):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0
    while not stop.is_set():
        path, want = REQUESTS[i % len(REQUESTS)]
        i += 1
        ok = True
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            ok = r.status == want
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        if i % 50 == 0:  # an event stream, read a little, then dropped
            try:
                ev = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                ev.request("GET", "/api/runs/soak1/events?after=0")
                ev.getresponse().read(256)
                ev.close()
            except (OSError, http.client.HTTPException):
                ok = False
        with lock:
            counts[0] += 1
            counts[1] += 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plumb", default="build/plumb")
    ap.add_argument("--seconds", type=int, default=600)
    a = ap.parse_args()
    plumb = os.path.abspath(a.plumb)
    tmp = tempfile.mkdtemp(prefix="dash-soak-")
    procs = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                       "--save", "", "--dir", tmp], stdout=subprocess.DEVNULL))
        wait_port(rport)
        url = f"redis://127.0.0.1:{rport}"
        subprocess.run([plumb, "data", "arith", "--out", f"{tmp}/arith"], check=True,
                       stdout=subprocess.DEVNULL)
        for name in ("soak1", "soak2"):
            subprocess.run([plumb, "train", "configs/grpo-arith.yaml", "--quiet",
                            f"run.dir={tmp}/runs/{name}", "model.path=",
                            f"model.tokenizer={tmp}/arith", f"data.train={tmp}/arith/prompts.jsonl",
                            f"data.eval={tmp}/arith/eval.jsonl", "run.steps=300", "run.log_every=1",
                            "eval.every=10", "eval.n=8", "train.batch_size=4", "algo.group_size=4",
                            f"metrics.redis={url}"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        servers = {}
        for kind, src in (("folders", ["--runs", f"{tmp}/runs"]), ("redis", ["--redis", url])):
            port = free_port()
            p = subprocess.Popen([plumb, "dash", *src, "--port", str(port)],
                                 stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(port)
            servers[kind] = (p, port)
        stop = threading.Event()
        lock = threading.Lock()
        counts = {k: [0, 0] for k in servers}
        threads = [threading.Thread(target=client, args=(port, stop, counts[k], lock))
                   for k, (p, port) in servers.items() for _ in range(2)]
        for t in threads:
            t.start()
        t0 = time.time()
        rss = {k: [] for k in servers}
        while time.time() - t0 < a.seconds:
            time.sleep(10)
            for k, (p, _) in servers.items():
                rss[k].append((time.time() - t0, rss_kib(p.pid)))
        stop.set()
        for t in threads:
            t.join()
        print(f"{'source':8} {'requests':>9} {'bad':>4} {'RSS@1min':>9} {'RSS end':>8} "
              f"{'RSS max':>8} {'end/1min':>8}")
        for k in servers:
            ref = next((v for s, v in rss[k] if s >= 60), rss[k][0][1])
            end, peak = rss[k][-1][1], max(v for _, v in rss[k])
            print(f"{k:8} {counts[k][0]:9d} {counts[k][1]:4d} {ref / 1024:7.1f}MB "
                  f"{end / 1024:6.1f}MB {peak / 1024:6.1f}MB {end / ref:8.3f}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
