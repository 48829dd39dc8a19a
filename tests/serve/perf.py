"""The serving performance targets of issue 14, measured against a running `bitnet serve`
with the official `openai` client (streaming completions, token-id prompts, end-of-generation
ignored so every request generates exactly what it asks for):

1. throughput: one client alone vs 8 concurrent clients, each request 128 prompt tokens and
   128 generated; aggregate generated tokens/s of the 8 vs the 1 (target >= 4x).
2. time to first token p99 of the 8 clients' requests vs a solo 128-token prompt's time to
   first token (target <= 2x that plus one prefill chunk).
3. prefix reuse: a 1,000-token prompt, then the same 1,000 tokens plus a few more; time to
   first token of the first vs the second (target >= 5x).

Solo and concurrent rounds alternate (`--rounds`), so both see the same machine; medians are
reported. Usage: python tests/serve/perf.py http://127.0.0.1:8080 [--rounds 3] [--json out]
"""

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

import openai

from load_test import percentile


async def stream(client, prompt, max_tokens):
    """(time to first token, generated tokens, total seconds) of one streamed completion."""
    start = time.perf_counter()
    first = None
    usage = None
    s = await client.completions.create(
        model="bitnet", prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    async for chunk in s:
        if chunk.usage is not None:
            usage = chunk.usage
        if first is None and chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - start
    if usage is None:
        raise RuntimeError("no usage chunk")
    return first, usage.completion_tokens, time.perf_counter() - start


async def concurrent(client, rng, n_vocab, clients, n_prompt, n_gen):
    prompts = [[rng.randrange(n_vocab) for _ in range(n_prompt)] for _ in range(clients)]
    start = time.perf_counter()
    results = await asyncio.gather(*(stream(client, p, n_gen) for p in prompts))
    wall = time.perf_counter() - start
    return sum(r[1] for r in results) / wall, [r[0] for r in results]


async def main(args):
    import urllib.request

    with urllib.request.urlopen(args.base.rstrip("/") + "/v1/models", timeout=30) as r:
        n_vocab = json.load(r)["data"][0]["meta"]["n_vocab"]
    client = openai.AsyncOpenAI(
        base_url=args.base.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=900
    )
    rng = random.Random(7)
    await concurrent(client, rng, n_vocab, 1, 16, 4)  # warm-up
    solo_ts, solo_ttft, multi_ts, multi_ttft = [], [], [], []
    for _ in range(args.rounds):
        ts, ttft = await concurrent(client, rng, n_vocab, 1, args.prompt, args.gen)
        solo_ts.append(ts)
        solo_ttft.extend(ttft)
        ts, ttft = await concurrent(client, rng, n_vocab, args.clients, args.prompt, args.gen)
        multi_ts.append(ts)
        multi_ttft.extend(ttft)
    prefix_first, prefix_second = [], []
    for _ in range(args.rounds):
        prefix = [rng.randrange(n_vocab) for _ in range(args.prefix)]
        first, _, _ = await stream(client, prefix, 1)
        second, _, _ = await stream(client, prefix + [rng.randrange(n_vocab) for _ in range(8)], 1)
        prefix_first.append(first)
        prefix_second.append(second)
    med = statistics.median
    result = {
        "clients": args.clients,
        "prompt_tokens": args.prompt,
        "generated_tokens": args.gen,
        "solo_tokens_per_s": round(med(solo_ts), 2),
        "concurrent_tokens_per_s": round(med(multi_ts), 2),
        "throughput_ratio": round(med(multi_ts) / med(solo_ts), 2),
        "solo_ttft_s": round(med(solo_ttft), 3),
        "concurrent_ttft_p50_s": round(percentile(multi_ttft, 0.5), 3),
        "concurrent_ttft_p99_s": round(percentile(multi_ttft, 0.99), 3),
        "ttft_p99_over_solo": round(percentile(multi_ttft, 0.99) / med(solo_ttft), 2),
        "prefix_tokens": args.prefix,
        "prefix_first_ttft_s": round(med(prefix_first), 3),
        "prefix_second_ttft_s": round(med(prefix_second), 3),
        "prefix_speedup": round(med(prefix_first) / med(prefix_second), 2),
        "rounds": args.rounds,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--prefix", type=int, default=1000)
    p.add_argument("--json")
    sys.exit(asyncio.run(main(p.parse_args())))
