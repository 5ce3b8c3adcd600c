"""Remote engines: a round over several OpenAI-compatible servers, queried at the same time vs one after another.

Starts `--servers` fake OpenAI-compatible servers on 127.0.0.1 (stdlib threads; each answers after
`--latency` seconds, like an engine decoding a reply, and serves at most `--concurrency` requests at a time,
as the endpoint setting tells MoCo) and runs `text_majority_vote` on `--questions` moco_demo questions with
one model per server, through the normal runner (pool, OpenAI backend, cache off), twice:
  (a) MoCo as shipped: the servers' requests are in flight together,
  (b) the same with `Scheduler.overlap_remote = False`: one server after the other,
and prints both wall times and the ratio b/a (ideal: the number of servers) plus the servers' peak of
requests in flight (each must stay within its concurrency).

    python benchmarks/remote_overlap.py [--servers 3] [--questions 24] [--latency 0.2] [--concurrency 8]

The fake servers cost no compute, so this measures MoCo's dispatch, not an engine: with real engines the gain
is the same when each server has its own GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def fake_server(latency: float, stats: dict) -> ThreadingHTTPServer:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            return

        def do_GET(self) -> None:  # /v1/models: the reachability check
            self._send({"data": []})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                stats["now"] += 1
                stats["peak"] = max(stats["peak"], stats["now"])
            time.sleep(latency)
            with lock:
                stats["now"] -= 1
                stats["served"] += 1
            text = "The answer is A."
            self._send({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(str(body["messages"])) // 4, "completion_tokens": 5}})

        def _send(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=3)
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    from moco.cache import NullCache
    from moco.config import parse_config
    from moco.scheduler import Scheduler
    from moco.runner import run_experiment

    stats = [{"now": 0, "peak": 0, "served": 0} for _ in range(args.servers)]
    servers = [fake_server(args.latency, s) for s in stats]
    cfg = parse_config({
        "method": "text_majority_vote",
        "task": {"name": "moco_demo", "test_limit": args.questions},
        "models": [{"model": f"engine-{i}", "endpoint": {"base_url": f"http://127.0.0.1:{s.server_port}/v1",
                                                         "concurrency": args.concurrency}}
                   for i, s in enumerate(servers)],
        "decoding": {"max_new_tokens": 16, "temperature": 0.0},
    })
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="moco-bench-"))
    run_experiment(cfg, out=root / "warmup", cache=NullCache())  # imports, task loading: not dispatch
    for s in stats:
        s["served"] = 0
    walls = {}
    for label, overlap in (("a", True), ("b", False)):
        Scheduler.overlap_remote = overlap
        t0 = time.perf_counter()
        res = run_experiment(cfg, out=root / label, cache=NullCache())
        walls[label] = time.perf_counter() - t0
        calls = sum(s["served"] for s in stats)
        per_server = calls // args.servers
        for s in stats:
            s["served"] = 0
        print(f"({label}) {'concurrent servers  ' if overlap else 'one server at a time'}: {calls} calls in "
              f"{walls[label]:6.2f} s; {res.metrics['total'].get('generated_tokens')} tokens")
    Scheduler.overlap_remote = True
    waves = -(-per_server // args.concurrency)
    print(f"workload: text_majority_vote on {args.questions} test questions (and the dev items), {args.servers} servers, "
          f"{per_server} calls each, {args.latency:g} s per request, concurrency {args.concurrency} per server "
          f"(>= {waves * args.latency:.2f} s per server)")
    print(f"ratio b/a = {walls['b'] / walls['a']:.2f}  (ideal {args.servers}: every server busy at once)")
    print(f"peak in flight per server: {[s['peak'] for s in stats]} (limit {args.concurrency})")
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    sys.exit(main())
