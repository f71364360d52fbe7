#!/usr/bin/env python3
"""A reward program and a reward server for plumb's tests of reward.type
exec and http (tests/test_remote_reward.c, tests/test_run.c).

  scorer.py exec MODE [ARG]   JSON lines on stdin, one score per line out
  scorer.py http PORT         POST: a JSON array of items, {"scores": [...]}

Scores: 1 when the response contains a digit 0-4, else 0 (what
reward.type regex with reward.arg "[0-4]" gives). Exec modes:
  ok               that score, as {"score": x}
  bare             that score as a bare number
  slow S           sleeps S seconds before each answer
  crash_after N    answers N lines, then exits with status 3
  garbage          answers "hello"
  extra            answers every line twice (in one write)
  echo_item        answers {"score": len(prompt) + 100 * len(answer)}
"""
import json
import re
import sys
import time


def score(it):
    return 1.0 if re.search("[0-4]", it["response"]) else 0.0


def run_exec(mode, arg):
    done = 0
    for line in sys.stdin:
        it = json.loads(line)
        if mode == "crash_after" and done == int(arg):
            sys.exit(3)
        if mode == "slow":
            time.sleep(float(arg))
        if mode == "garbage":
            out = "hello"
        elif mode == "bare":
            out = json.dumps(score(it))
        elif mode == "echo_item":
            out = json.dumps({"score": len(it["prompt"]) + 100 * len(it["answer"])})
        else:
            out = json.dumps({"score": score(it)})
        print(out + "\n" + out if mode == "extra" else out, flush=True)
        done += 1


def run_http(port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"scores": [score(it) for it in items]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "http":
        run_http(int(sys.argv[2]))
    else:
        try:
            run_exec(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
        except BrokenPipeError:  # plumb stopped reading: it has said why
            sys.exit(1)
