"""A small OpenAI-compatible chat server for failure tests, run as its own process on 127.0.0.1.

    python tests/chat_server.py PORT [--exit-after N] [--fail-tenth] [--delay S]

Answers are deterministic (temperature 0): "The answer is (X)", X chosen by a hash of the model name and the
last user message, with `usage` token counts. `--exit-after N` kills the process (os._exit, no goodbye: open
connections are reset, the port then refuses) right after the N-th answer; `--fail-tenth` answers HTTP 500
to every prompt whose hash falls in a tenth of the space, on every attempt (so those calls fail after their
retries); `--delay S` waits S seconds before each answer (a slow engine). GET /v1/stats says how many completions were answered.
POST /v1/load_lora_adapter registers a LoRA name as vLLM's does (journalled to $CHAT_SERVER_JOURNAL if set).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"answered": 0, "failed": 0}
ADAPTERS: dict[str, str] = {}  # LoRA name -> folder, as POST /v1/load_lora_adapter gave them
LOCK = threading.Lock()


def digest(model: str, messages: list[dict]) -> int:
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return int(hashlib.sha256(f"{model}\n{last}".encode()).hexdigest(), 16)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    args: argparse.Namespace

    def log_message(self, *a) -> None:  # quiet
        pass

    def _send(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path.endswith("/models"):
            names = ["m1", "m2", "m3", *ADAPTERS]
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in names]})
        elif self.path.endswith("/stats"):
            with LOCK:
                self._send(200, dict(STATE))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path.endswith("/load_lora_adapter"):  # vLLM's runtime LoRA loading
            with LOCK:
                ADAPTERS[body["lora_name"]] = body["lora_path"]
                if os.environ.get("CHAT_SERVER_JOURNAL"):
                    with open(os.environ["CHAT_SERVER_JOURNAL"], "a") as f:
                        f.write(json.dumps({"adapter": body, "port": self.server.server_address[1]}) + "\n")
            self._send(200, {"status": "loaded"})
            return
        if os.environ.get("CHAT_SERVER_JOURNAL"):  # what sampling was asked for
            with LOCK, open(os.environ["CHAT_SERVER_JOURNAL"], "a") as f:
                f.write(json.dumps({"request": {k: v for k, v in body.items() if k != "messages"}}) + "\n")
        if self.args.delay:
            time.sleep(self.args.delay)
        h = digest(body["model"], body["messages"])
        if self.args.fail_tenth and h % 10 == 0:
            with LOCK:
                STATE["failed"] += 1
            self._send(500, {"error": {"message": "internal error (injected)"}})
            return
        text = f"The answer is ({'ABCD'[h % 4]})"
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
        with LOCK:
            STATE["answered"] += 1
            if self.args.exit_after and STATE["answered"] >= self.args.exit_after:
                os._exit(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--exit-after", type=int, default=0)
    ap.add_argument("--fail-tenth", action="store_true")
    ap.add_argument("--delay", type=float, default=0.0)
    Handler.args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", Handler.args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
