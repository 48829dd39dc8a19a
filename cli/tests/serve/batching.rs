//! Continuous batching and prefix reuse as clients see them: concurrent streams each equal
//! their solo run, and a resent chat history computes only the new turn.

use crate::server::*;

/// The text of a streamed completion and its `finish_reason`.
fn streamed_text(body: &str) -> (String, String) {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let mut text = String::new();
    let mut finish = String::new();
    for d in &data[..data.len() - 1] {
        let v = json(d);
        let choice = &v["choices"][0];
        text.push_str(choice["text"].as_str().unwrap_or(""));
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish)
}

fn completion(prompt: &str, stream: bool) -> String {
    format!(
        r#"{{"prompt": "{prompt}", "max_tokens": 24, "temperature": 0, "ignore_eos": true, "stream": {stream}}}"#
    )
}

fn metric(base: &str, name: &str) -> f64 {
    let (status, text) = get(base, "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in\n{text}"))
}

#[test]
fn concurrent_streams_each_equal_their_solo_greedy_output() {
    // Six requests on four sequences: some run together from the start, the others join as
    // sequences free up, and prompts of different lengths are read while others decode.
    let s = start_server_with_ctx("1024", &["--parallel", "4", "--prefill-chunk", "8"]);
    let prompts: Vec<String> = (0..6)
        .map(|i| format!("client {i} asks:{}", " tell me more".repeat(i)))
        .collect();
    let solo: Vec<String> = prompts
        .iter()
        .map(|p| {
            let (status, body) = post(&s.base, "/v1/completions", &completion(p, false));
            assert_eq!(status, 200, "{body}");
            json(&body)["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // The solo runs left the last four prompts cached on the four sequences: the concurrent
    // runs mix reused prefixes with prompts computed afresh.
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (base, body) = (s.base.clone(), completion(p, true));
            std::thread::spawn(move || post(&base, "/v1/completions", &body))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (status, body) = h.join().unwrap();
        assert_eq!(status, 200, "{body}");
        let (text, finish) = streamed_text(&body);
        assert_eq!(text, solo[i], "request {i} differs from its solo run");
        assert_eq!(finish, "length");
    }
    assert_eq!(metric(&s.base, "bitnet_requests_running"), 0.0);
}

#[test]
fn a_resent_chat_history_computes_only_the_new_turn() {
    let s = start_server_with_ctx("1024", &["--parallel", "2"]);
    let system = "You are a careful assistant who answers in full sentences. ".repeat(4);
    let first = format!(
        r#"{{"messages": [{{"role": "system", "content": "{system}"}}, {{"role": "user", "content": "What is a ternary weight?"}}], "max_tokens": 8, "temperature": 0}}"#
    );
    let (status, body) = post(&s.base, "/v1/chat/completions", &first);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    let reply = v["choices"][0]["message"]["content"].as_str().unwrap();
    let n_first = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let computed_first = metric(&s.base, "bitnet_prompt_tokens_computed_total");
    assert_eq!(computed_first, n_first as f64);

    let second = format!(
        r#"{{"messages": [{{"role": "system", "content": "{system}"}}, {{"role": "user", "content": "What is a ternary weight?"}}, {{"role": "assistant", "content": {}}}, {{"role": "user", "content": "And an 8-bit activation?"}}], "max_tokens": 8, "temperature": 0}}"#,
        serde_json::Value::from(reply)
    );
    let (status, body) = post(&s.base, "/v1/chat/completions", &second);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    let n_second = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    // The whole first prompt came from the cache; only the reply and the new turn were read.
    assert!(
        cached >= n_first && cached < n_second,
        "{cached} of {n_second} cached, first prompt {n_first}"
    );
    let computed_second = metric(&s.base, "bitnet_prompt_tokens_computed_total") - computed_first;
    assert_eq!(computed_second, (n_second - cached) as f64);
    assert!(computed_second <= (n_second - n_first) as f64);
}
