#!/usr/bin/python3
"""A receiver of jobd's push callbacks for the integration tests.

Listens on 127.0.0.1 (port 0), prints "PORT <n>" once it listens, and
answers each POST:
  * 503 while --fail-while FILE exists, and to the first --fail-first POSTs;
  * 401 if its X-Jobd-Signature is not HMAC-SHA256(key, timestamp "." body)
    of the key in --secret-file (checked with Python's hmac, as the README
    shows receivers);
  * 200 otherwise.
Every POST is appended to --log as one JSON line: job id, attempt, whether
the signature was valid, the answer given and the body (the terminal
JobEvent as JSON).
"""
import argparse
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading

args = None
lock = threading.Lock()
count = 0


def valid(headers, body, key):
    timestamp = headers.get("X-Jobd-Timestamp", "")
    signature = headers.get("X-Jobd-Signature", "")
    expected = "sha256=" + hmac.new(key, timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = open(args.secret_file, "rb").read().rstrip(b"\r\n")
        ok = valid(self.headers, body, key)
        with lock:
            count += 1
            if os.path.exists(args.fail_while) or count <= args.fail_first:
                code = 503
            else:
                code = 200 if ok else 401
            with open(args.log, "a") as log:
                log.write(json.dumps({
                    "job_id": self.headers.get("X-Jobd-Job-Id", ""),
                    "attempt": self.headers.get("X-Jobd-Attempt", ""),
                    "content_type": self.headers.get("Content-Type", ""),
                    "valid": ok,
                    "code": code,
                    "event": json.loads(body) if ok else None,
                }) + "\n")
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *unused):
        pass


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-while", default="/nonexistent")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("PORT", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
