#!/usr/bin/env python3
"""A reward server for plumb's reward.type http: exact match of the answer.
usage: python3 examples/reward_server.py [PORT]   (default 8000)"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Score(BaseHTTPRequestHandler):
    def do_POST(self):
        # a JSON array of {"prompt", "response", "answer"}
        items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scores = [float(it["response"].strip() == it["answer"].strip()) for it in items]
        body = json.dumps({"scores": scores}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
ThreadingHTTPServer(("127.0.0.1", port), Score).serve_forever()
