#!/usr/bin/env python3
"""Checks a running llama-server with parallel slots (run.sh starts it with the plugin).

    server_check.py <port> <n_predict> <prompt> [<prompt> ...]

Each prompt is a comma-separated list of token ids (the test vocabulary cannot tokenize text).
Every prompt is first completed alone, one after the other (greedy, temperature 0), then all
of them at once from one thread each. Passes when every concurrent completion has exactly the
token ids of its solo run, the same runner-up tokens at every step with log-probabilities
within 1e-4 (the test model's greedy choice is an easy one: repeating the last token; the
runner-ups' log-probabilities show whether the numbers behind it are the same), and the
server's metrics show that the concurrent requests shared its decode steps (more than 2 busy
slots per llama_decode on average while they ran). Standard library only.
"""

import json
import sys
import threading
import urllib.request


def post(port, path, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def metrics(port):
    """(llama_decode calls, busy slots summed over them) so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:"):
            name, value = line.split()
            values[name[len("llamacpp:"):]] = float(value)
    n_decode = values["n_decode_total"]
    return n_decode, values["n_busy_slots_per_decode"] * n_decode


# Runner-up tokens compared per step, and how far their log-probabilities may differ.
N_PROBS = 4
MAX_LOGPROB_DIFF = 1e-4


def complete(port, prompt, n_predict):
    """(token ids, per step [(id, logprob)] of the N_PROBS most likely tokens)."""
    body = {
        "prompt": prompt,
        "n_predict": n_predict,
        "temperature": 0,
        "ignore_eos": True,
        "cache_prompt": False,
        "return_tokens": True,
        "n_probs": N_PROBS,
    }
    out = post(port, "/completion", body)
    tokens, steps = out.get("tokens"), out.get("completion_probabilities")
    if not isinstance(tokens, list) or len(tokens) != n_predict or len(steps or []) != n_predict:
        raise RuntimeError(f"unexpected answer for {prompt}: {json.dumps(out)[:400]}")
    top = [[(p["id"], p["logprob"]) for p in s["top_logprobs"]] for s in steps]
    return tokens, top


def difference(a, b):
    """Largest log-probability difference of two completions (inf if any id differs)."""
    if a[0] != b[0]:
        return float("inf")
    worst = 0.0
    for sa, sb in zip(a[1], b[1]):
        if [i for i, _ in sa] != [i for i, _ in sb]:
            return float("inf")
        worst = max([worst] + [abs(x - y) for (_, x), (_, y) in zip(sa, sb)])
    return worst


def main():
    port, n_predict = int(sys.argv[1]), int(sys.argv[2])
    prompts = [[int(t) for t in p.split(",")] for p in sys.argv[3:]]
    solo = [complete(port, p, n_predict) for p in prompts]
    decodes0, busy0 = metrics(port)

    together = [None] * len(prompts)
    errors = []
    start = threading.Barrier(len(prompts))

    def run(i):
        try:
            start.wait()
            together[i] = complete(port, prompts[i], n_predict)
        except Exception as e:  # reported below, the check fails
            errors.append(f"request {i}: {e}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decodes1, busy1 = metrics(port)

    ok = not errors
    for e in errors:
        print(e)
    for i, (a, b) in enumerate(zip(solo, together)):
        diff = difference(a, b) if b is not None else float("inf")
        ok &= diff <= MAX_LOGPROB_DIFF
        print(f"prompt {i}: solo {a[0][:8]}..., concurrent {b[0][:8] if b else None}..., "
              f"largest log-probability difference {diff:.3g}")
    n_decode = decodes1 - decodes0
    per_decode = (busy1 - busy0) / max(n_decode, 1)
    print(f"concurrent phase: {n_decode:.0f} llama_decode calls, {per_decode:.2f} busy slots each")
    ok &= per_decode > 2
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
