"""Bounded load test of `bitnet serve` with the official `openai` client: `--clients` streaming
clients send completions back to back for `--duration` seconds (requests already started then
run to their end), each prompt `--prompt-tokens` random token ids, `--max-tokens` generated
(end-of-generation ignored, so every request generates exactly that many).

    python tests/serve/load_test.py http://127.0.0.1:8080 --clients 32 --duration 60 \
        --server-pid PID [--json out.json] [--max-failures 0] [--max-rss-growth 0.05]

Reports requests (ok / failed), aggregate generated tokens/s, time to first token p50/p99 and
per-token latency (gaps between streamed tokens) p50/p99, and with --server-pid the server's
RSS over the first and the last 10 s. Exits 1 when failures exceed --max-failures or the RSS
grew by more than --max-rss-growth.
"""

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.request

import openai


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Stats:
    def __init__(self):
        self.ok = 0
        self.failed = 0
        self.errors = []
        self.tokens = 0
        self.ttft = []
        self.gaps = []


async def one_request(client, rng, args, n_vocab, stats):
    prompt = [rng.randrange(n_vocab) for _ in range(args.prompt_tokens)]
    start = time.perf_counter()
    last = None
    n = 0
    try:
        stream = await client.completions.create(
            model="bitnet",
            prompt=prompt,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        usage = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if not chunk.choices or not chunk.choices[0].text:
                continue
            now = time.perf_counter()
            if last is None:
                stats.ttft.append(now - start)
            else:
                stats.gaps.append(now - last)
            last = now
            n += 1
        if usage is None:
            raise RuntimeError("the stream ended without its usage chunk")
        stats.tokens += usage.completion_tokens
        stats.ok += 1
    except Exception as e:  # every failure is counted, the first few kept
        stats.failed += 1
        if len(stats.errors) < 5:
            stats.errors.append(f"{type(e).__name__}: {e}")


async def client_loop(i, client, args, n_vocab, deadline, stats):
    rng = random.Random(args.seed * 1000 + i)
    while time.perf_counter() < deadline:
        await one_request(client, rng, args, n_vocab, stats)


async def sample_rss(pid, samples, stop):
    t0 = time.perf_counter()
    while not stop.is_set():
        samples.append((time.perf_counter() - t0, rss_bytes(pid)))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


async def main(args):
    with urllib.request.urlopen(args.base.rstrip("/") + "/v1/models", timeout=30) as r:
        n_vocab = json.load(r)["data"][0]["meta"]["n_vocab"]
    client = openai.AsyncOpenAI(
        base_url=args.base.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=600
    )
    stats = Stats()
    rss = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(args.server_pid, rss, stop)) if args.server_pid else None
    start = time.perf_counter()
    deadline = start + args.duration
    await asyncio.gather(
        *(client_loop(i, client, args, n_vocab, deadline, stats) for i in range(args.clients))
    )
    elapsed = time.perf_counter() - start
    stop.set()
    if sampler:
        await sampler
    result = {
        "clients": args.clients,
        "duration_s": round(elapsed, 2),
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "requests_ok": stats.ok,
        "requests_failed": stats.failed,
        "errors": stats.errors,
        "generated_tokens": stats.tokens,
        "tokens_per_s": round(stats.tokens / elapsed, 2),
        "ttft_p50_s": round(percentile(stats.ttft, 0.5), 4),
        "ttft_p99_s": round(percentile(stats.ttft, 0.99), 4),
        "token_latency_p50_s": round(percentile(stats.gaps, 0.5), 4),
        "token_latency_p99_s": round(percentile(stats.gaps, 0.99), 4),
    }
    ok = stats.failed <= args.max_failures
    if rss:
        first = max(b for t, b in rss if t <= 10.0)
        end = rss[-1][0]
        last = max(b for t, b in rss if t >= end - 10.0)
        growth = (last - first) / first
        result.update(
            rss_first_10s_mb=round(first / 1e6, 1),
            rss_last_10s_mb=round(last / 1e6, 1),
            rss_growth=round(growth, 4),
        )
        ok = ok and growth <= args.max_rss_growth
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-pid", type=int)
    p.add_argument("--json")
    p.add_argument("--max-failures", type=int, default=0)
    p.add_argument("--max-rss-growth", type=float, default=0.05)
    sys.exit(asyncio.run(main(p.parse_args())))
