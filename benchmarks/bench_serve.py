"""Load test of ``seem serve``: concurrent clients on 127.0.0.1, each uploading an image and clicking on it.

Usage::

    python benchmarks/bench_serve.py [--clients 32] [--clicks 10] [--duration 60] [--model PT --config YAML]
                                     [--image JPG] [--url http://127.0.0.1:8000]

Without ``--url`` it starts the server itself (``python -m seem.serve`` on a free loopback port; default model: the
small SEEM parity model of ``../shared/parity/seem``), waits for ``/healthz``, then runs ``--clients`` threads for
``--duration`` seconds. Each client repeats: upload the image (``POST /v1/sessions``), ``--clicks`` clicks on one
object (the first positive, then alternately negative and positive, each a new round with the memory prompt), delete
the session. A client finishes the iteration in progress when the time is up.

Reported: requests and iterations per second, p50 / p99 / max latency per request kind, errors (goal: 0; any
non-2xx answer or transport failure counts, with its status and message) and the server's peak memory (``VmHWM``
from ``/proc``, plus the largest ``VmRSS`` sampled during the run). ``--json PATH`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEEM_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_MODEL = SHARED / "parity" / "seem" / "seem_v1_small.pt"
DEFAULT_CONFIG = SHARED / "parity" / "seem" / "seem_v1_small.yaml"
DEFAULT_IMAGE = SHARED / "data" / "grabcut" / "images" / "124084.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_memory(pid: int) -> dict[str, int]:
    """``VmRSS`` / ``VmHWM`` of a process in bytes (Linux ``/proc``); empty elsewhere."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return out


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "seem.serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    cmd += ["--model", str(args.model)]
    if args.config:
        cmd += ["--config", str(args.config)]
    cmd += ["--max-pending", str(max(64, 2 * args.clients)), "--workers", str(args.workers)]
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + args.start_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"the server exited with {proc.returncode}:\n{err}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not answer /healthz within {args.start_timeout} s")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.iterations = 0

    def record(self, kind: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latency[kind].append(seconds)
            if error is not None:
                self.errors[f"{kind}: {error}"] += 1


def client_loop(
    url: str, image: bytes, size: tuple[int, int], clicks: int, stop_at: float, seed: int, stats: Stats
) -> None:
    rng = random.Random(seed)
    h, w = size
    with httpx.Client(base_url=url, timeout=120.0) as c:

        def call(kind: str, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
            t0 = time.perf_counter()
            err = None
            body = None
            try:
                r = c.request(method, path, **kw)
                if r.status_code >= 300:
                    err = f"{r.status_code} {r.text[:120]}"
                elif r.status_code != 204:
                    body = r.json()
            except httpx.HTTPError as e:
                err = f"{type(e).__name__}: {e}"
            stats.record(kind, time.perf_counter() - t0, err)
            return body

        while time.time() < stop_at:
            up = call("upload", "POST", "/v1/sessions", files={"image": ("bench.jpg", image, "image/jpeg")})
            if up is None:
                continue
            sid = up["session_id"]
            oid = None
            for i in range(clicks):
                x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
                label = 1 if i % 2 == 0 else 0
                out = call(
                    "click",
                    "POST",
                    f"/v1/sessions/{sid}/segment",
                    json={"object_id": oid, "prompts": {"points": [[x, y, label]]}},
                )
                if out is not None:
                    oid = out["object_id"]
            call("delete", "DELETE", f"/v1/sessions/{sid}")
            with stats.lock:
                stats.iterations += 1


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--clicks", type=int, default=10)
    p.add_argument("--duration", type=float, default=60.0, help="seconds during which clients start iterations")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="official YAML of --model ('' for none)")
    p.add_argument("--image", default=str(DEFAULT_IMAGE))
    p.add_argument("--workers", type=int, default=1, help="server model threads")
    p.add_argument("--url", default=None, help="use a running server instead of starting one")
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()

    from PIL import Image

    image = Path(args.image).read_bytes()
    with Image.open(args.image) as im:
        size = (im.height, im.width)
    proc = None
    if args.url is None:
        proc, url = start_server(args)
    else:
        url = args.url.rstrip("/")
    try:
        mem_start = proc_memory(proc.pid) if proc else {}
        peak_rss = mem_start.get("VmRSS", 0)
        stats = Stats()
        t0 = time.time()
        stop_at = t0 + args.duration
        threads = [
            threading.Thread(target=client_loop, args=(url, image, size, args.clicks, stop_at, i, stats), daemon=True)
            for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if proc is not None:
                peak_rss = max(peak_rss, proc_memory(proc.pid).get("VmRSS", 0))
            time.sleep(0.2)
        wall = time.time() - t0
        mem_end = proc_memory(proc.pid) if proc else {}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    total = sum(len(v) for v in stats.latency.values())
    n_err = sum(stats.errors.values())
    result: dict[str, Any] = {
        "clients": args.clients,
        "clicks_per_iteration": args.clicks,
        "wall_s": round(wall, 2),
        "requests": total,
        "iterations": stats.iterations,
        "throughput_rps": round(total / wall, 2),
        "iterations_per_s": round(stats.iterations / wall, 3),
        "errors": n_err,
        "error_kinds": dict(stats.errors.most_common(10)),
        "latency_ms": {
            k: {
                "n": len(v),
                "p50": round(1000 * statistics.median(v), 1),
                "p99": round(1000 * pct(v, 0.99), 1),
                "max": round(1000 * max(v), 1),
            }
            for k, v in sorted(stats.latency.items())
        },
        "server_memory_mib": {
            "after_start_rss": round(mem_start.get("VmRSS", 0) / 2**20, 1),
            "peak_rss_sampled": round(peak_rss / 2**20, 1),
            "peak_hwm": round(mem_end.get("VmHWM", 0) / 2**20, 1),
        },
    }
    print(f"seem serve load test: {args.clients} clients × (upload + {args.clicks} clicks + delete), {wall:.1f} s")
    print(f"  requests {total}, {result['throughput_rps']} req/s; iterations {stats.iterations}")
    for k, v in result["latency_ms"].items():
        print(f"  {k:<7} n={v['n']:<6} p50 {v['p50']:>8.1f} ms   p99 {v['p99']:>8.1f} ms   max {v['max']:>8.1f} ms")
    print(f"  errors {n_err}" + (f": {result['error_kinds']}" if n_err else " (goal 0)"))
    if proc is not None:
        m = result["server_memory_mib"]
        print(f"  server memory: {m['after_start_rss']} MiB after start, peak {m['peak_hwm']} MiB (VmHWM)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 1 if n_err else 0


if __name__ == "__main__":
    raise SystemExit(main())
