"""`bitnet serve` through the official `openai` Python client (and Prometheus' own parser for
/metrics). Run by cli/tests/serve/openai_client.rs against a server on a tiny model:

    python tests/serve/openai_client.py http://127.0.0.1:PORT

Prints one line per check and `N passed, N failed`; exits 1 when a check failed.
"""

import concurrent.futures
import sys
import time
import traceback
import urllib.request

import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

BASE = sys.argv[1].rstrip("/")
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=120)
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def metrics():
    with urllib.request.urlopen(BASE + "/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text"), r.headers
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def complete(prompt, **kw):
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, **kw)
    return r.choices[0].text, r


def complete_streamed(prompt, **kw):
    stream = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, temperature=0, stream=True, **kw
    )
    text, finish = "", None
    for chunk in stream:
        text += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
    return text, finish


@check
def completions_streaming_equals_non_streaming():
    text, r = complete("The quick brown fox")
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    streamed, finish = complete_streamed("The quick brown fox")
    assert streamed == text, (streamed, text)
    assert finish == r.choices[0].finish_reason


@check
def chat_streaming_equals_non_streaming():
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
    ]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    text = r.choices[0].message.content
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == text, (streamed, text)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@check
def eight_concurrent_clients_get_their_solo_outputs():
    prompts = [f"Client {i} asks about {w}" for i, w in enumerate("abcdefgh")]
    solo = [complete(p)[0] for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        streamed = list(pool.map(lambda p: complete_streamed(p)[0], prompts))
        plain = list(pool.map(lambda p: complete(p)[0], prompts))
    assert streamed == solo, (streamed, solo)
    assert plain == solo, (plain, solo)


@check
def bad_requests_get_4xx_with_openai_error_bodies():
    cases = [
        (dict(prompt="x", max_tokens=100000), "context_length_exceeded"),
        (dict(prompt="x", n=2), None),
        (dict(prompt="x", temperature=7), None),
        (dict(prompt="x", top_p=0), None),
    ]
    for kw, code in cases:
        try:
            client.completions.create(model="tiny", **kw)
        except openai.BadRequestError as e:
            assert e.status_code == 400
            assert isinstance(e.body, dict) and e.body.get("message"), e.body
            if code:
                assert e.code == code, (e.code, code)
        else:
            raise AssertionError(f"{kw} was accepted")
    try:
        client.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "x"}])
    except openai.BadRequestError as e:
        assert "role" in e.message
    else:
        raise AssertionError("an unknown role was accepted")


@check
def a_client_leaving_mid_stream_cancels_its_request():
    before = metrics().get(("bitnet_requests_total", (("outcome", "cancelled"),)), 0)
    stream = client.completions.create(
        # Most of the server's 2048-token budget: the tiny model makes 200 tokens in a few
        # milliseconds, before the client has closed, so a short request may finish first.
        model="tiny", prompt="Once upon a time", max_tokens=1900, temperature=0, stream=True,
        extra_body={"ignore_eos": True},
    )
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    # The server goes on serving, and counts the request as cancelled.
    text, _ = complete("After the disconnect")
    assert text is not None
    for _ in range(100):
        after = metrics().get(("bitnet_requests_total", (("outcome", "cancelled"),)), 0)
        if after > before:
            break
        time.sleep(0.05)
    assert after == before + 1, (before, after)


@check
def metrics_parse_and_count_tokens():
    m = metrics()
    generated = m[("bitnet_generated_tokens_total", ())]
    prompt = m[("bitnet_prompt_tokens_total", ())]
    assert generated > 0 and prompt > 0, m
    assert m[("bitnet_time_to_first_token_seconds_count", ())] > 0
    assert m[("bitnet_requests_running", ())] == 0
    assert m[("bitnet_kv_cache_capacity_tokens", ())] > 0


@check
def models_lists_the_served_model():
    models = client.models.list()
    assert len(models.data) == 1 and models.data[0].id


passed = failed = 0
for fn in CHECKS:
    try:
        fn()
        passed += 1
        print(f"ok     {fn.__name__}", flush=True)
    except Exception:
        failed += 1
        print(f"FAILED {fn.__name__}\n{traceback.format_exc()}", flush=True)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
