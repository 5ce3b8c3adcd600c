"""Throughput of `moco serve` on the embedded model at 1, 4 and 16 concurrent clients.

Starts `moco serve` (single_model on smollm2-135m-instruct, greedy, no response cache) in a subprocess
on 127.0.0.1 and drives it with the `openai` client from C threads, each sending requests one after the
other (distinct prompts, so nothing is shared). Prints requests/s and completion tokens/s per level and
the ratio 16 vs 1 (target >= 3x: concurrent requests are micro-batched into shared forward passes).
With --unbatched it also runs 16 clients against a server with --max-batch 1, to show that the gain
comes from batching and not from overlapping HTTP.

    python benchmarks/serve_throughput.py [--max-tokens 32] [--requests-per-client 3] [--unbatched] [--threads N]

The machine's load average is printed before and after: on a shared machine, compare runs with similar load.
On an oversubscribed machine, `--threads 1` (OMP_NUM_THREADS for the server) avoids the collapse of
multi-threaded CPU kernels that wait on each other's threads.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOPICS = ["a lighthouse", "a lost key", "the first snow", "a robot chef", "a quiet library", "an old bridge",
          "a desert storm", "a paper boat", "a clockmaker", "a night train", "a garden of glass", "a stray cat",
          "a mountain village", "a broken violin", "a hidden door", "a summer market", "the last bus",
          "a sleepy dragon", "a secret recipe", "a river festival"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


THREADS: dict[str, str] = {}


def start(config: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **THREADS)
    proc = subprocess.Popen([sys.executable, "-m", "moco", "serve", str(config), "--port", str(port), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, f"{base}/v1"
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("server did not start")


def level(url: str, clients: int, per_client: int, max_tokens: int, offset: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

    def worker(c: int) -> tuple[int, int]:
        done = toks = 0
        for k in range(per_client):
            topic = TOPICS[(offset + c * per_client + k) % len(TOPICS)]
            r = client.chat.completions.create(
                model="bench", max_tokens=max_tokens,
                messages=[{"role": "user", "content": f"Write a long story about {topic} (request {offset}-{c}-{k})."}])
            done += 1
            toks += r.usage.completion_tokens
        return done, toks

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - t0
    n, toks = sum(r[0] for r in results), sum(r[1] for r in results)
    return {"clients": clients, "requests": n, "tokens": toks, "wall": wall, "rps": n / wall, "tps": toks / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--requests-per-client", type=int, default=3, help="at 4 and 16 clients (1 client sends 3x as many)")
    ap.add_argument("--unbatched", action="store_true", help="also measure 16 clients with --max-batch 1")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of the server (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        THREADS.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    import httpx

    from moco.models import builtin

    builtin.ensure_converted("smollm2-135m-instruct")  # convert once, outside the timing
    cfg = Path(tempfile.mkdtemp()) / "bench.yaml"
    cfg.write_text("method: single_model\nname: bench\nmodels: [smollm2-135m-instruct]\n"
                   f"decoding: {{max_new_tokens: {args.max_tokens}, temperature: 0.0}}\nhardware: {{batch_size: 32}}\n")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(f"workload: single_model smollm2-135m-instruct, greedy, max_tokens {args.max_tokens}, no response cache, "
          f"server threads: {args.threads or 'default'}")
    rows = []
    proc, url = start(cfg, "--batch-window-ms", "5", "--max-batch", "32")
    try:
        level(url, 2, 1, args.max_tokens, offset=999)  # warm-up: first forward passes, allocator
        for c in (1, 4, 16):
            per = args.requests_per_client * (3 if c == 1 else 1)
            rows.append(level(url, c, per, args.max_tokens, offset=c * 100))
        stats = httpx.get(f"{url}/moco/info").json()["batching"]
    finally:
        proc.terminate()
        proc.wait()
    unbatched = None
    if args.unbatched:
        proc, url = start(cfg, "--max-batch", "1")
        try:
            level(url, 2, 1, args.max_tokens, offset=998)
            unbatched = level(url, 16, args.requests_per_client, args.max_tokens, offset=5000)
        finally:
            proc.terminate()
            proc.wait()
    print(f"{'clients':>8} {'requests':>9} {'tokens':>7} {'seconds':>8} {'req/s':>7} {'tok/s':>7}")
    for r in rows:
        print(f"{r['clients']:>8} {r['requests']:>9} {r['tokens']:>7} {r['wall']:>8.1f} {r['rps']:>7.2f} {r['tps']:>7.1f}")
    if unbatched:
        u = unbatched
        print(f"{'16 (max-batch 1)':>8} {u['requests']:>3} {u['tokens']:>7} {u['wall']:>8.1f} {u['rps']:>7.2f} {u['tps']:>7.1f}")
    one, sixteen = rows[0], rows[-1]
    print(f"ratio 16 vs 1 clients: {sixteen['rps'] / one['rps']:.2f}x requests/s, "
          f"{sixteen['tps'] / one['tps']:.2f}x tokens/s (target >= 3x)")
    if unbatched:
        print(f"ratio batched vs max-batch 1 at 16 clients: {sixteen['tps'] / unbatched['tps']:.2f}x tokens/s")
    print(f"server batches: {stats['batches']} for {stats['items']} requests (largest {stats['largest_batch']}, "
          f"mean {stats['mean_batch']})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
