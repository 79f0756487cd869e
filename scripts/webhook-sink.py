#!/usr/bin/env python3
"""A webhook receiver for benchmarks: answers every POST with 200 after --delay seconds
(threads, so slow answers overlap), and prints how many it received when stopped.

    python3 scripts/webhook-sink.py --port 8099 --delay 2
    allot bench --webhook-url http://127.0.0.1:8099/ …
"""
import argparse
import http.server
import threading
import time

received = 0
lock = threading.Lock()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds per answer")
    args = parser.parse_args()

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            global received
            self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(args.delay)
            with lock:
                received += 1
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Sink)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    print(f"received {received}")


if __name__ == "__main__":
    main()
