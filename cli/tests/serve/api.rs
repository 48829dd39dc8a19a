//! The OpenAI endpoints over plain HTTP: shapes, validation, concurrency, cancellation.

use crate::common::*;
use crate::server::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn health_and_models() {
    let s = start_server(&[]);
    let (status, body) = get(&s.base, "/health");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["status"], "ok");
    let (status, body) = get(&s.base, "/v1/models");
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny.gguf");
    let (status, body) = get(&s.base, "/v1/nothing");
    assert_eq!(status, 404);
    assert!(json(&body)["error"]["message"].is_string());
}

#[test]
fn completion_matches_the_cli_and_streaming_matches_non_streaming() {
    let s = start_server(&[]);
    let req = r#"{"prompt": "Hello world", "max_tokens": 10, "temperature": 0}"#;
    let (status, body) = post(&s.base, "/v1/completions", req);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(matches!(
        v["choices"][0]["finish_reason"].as_str(),
        Some("length" | "stop")
    ));
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // Same greedy text as `bitnet run`.
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&[
        "run",
        "-m",
        model,
        "-p",
        "Hello world",
        "--temp",
        "0",
        "-n",
        "10",
        "--no-display-prompt",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim_end_matches('\n'), text);

    let streamed =
        r#"{"prompt": "Hello world", "max_tokens": 10, "temperature": 0, "stream": true}"#;
    let (status, body) = post(&s.base, "/v1/completions", streamed);
    assert_eq!(status, 200);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let mut joined = String::new();
    let mut finish = None;
    for d in &data[..data.len() - 1] {
        let v = json(d);
        joined.push_str(v["choices"][0]["text"].as_str().unwrap());
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(joined, text);
    assert!(finish.is_some());
}

#[test]
fn chat_completion_streaming_and_not() {
    let s = start_server(&[]);
    let req = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}], "max_tokens": 8, "temperature": 0}"#;
    let (status, body) = post(&s.base, "/v1/chat/completions", req);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    let streamed = req.replace("\"temperature\": 0", "\"temperature\": 0, \"stream\": true");
    let (status, body) = post(&s.base, "/v1/chat/completions", &streamed);
    assert_eq!(status, 200);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let first = json(&data[0]);
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let joined: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            json(d)["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(joined, text);
}

#[test]
fn invalid_requests_get_400_with_a_json_error() {
    let s = start_server(&[]);
    for (body, needle) in [
        ("{not json", "invalid request body"),
        (r#"{"prompt": 5}"#, "invalid request body"),
        (
            r#"{"prompt": "x", "temperature": "hot"}"#,
            "invalid request body",
        ),
        (
            r#"{"prompt": "x", "max_tokens": -3}"#,
            "invalid request body",
        ),
        (r#"{"prompt": "x", "n": 2}"#, "`n`"),
        (r#"{"prompt": "x", "top_p": 0}"#, "top_p"),
        (r#"{"prompt": "x", "max_tokens": 100000}"#, "context"),
    ] {
        let (status, resp) = post(&s.base, "/v1/completions", body);
        assert_eq!(status, 400, "{body} -> {resp}");
        let msg = json(&resp)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(needle), "{body} -> {msg}");
    }
    let (status, resp) = post(&s.base, "/v1/chat/completions", r#"{"messages": []}"#);
    assert_eq!(status, 400, "{resp}");
    let long_prompt = format!(
        r#"{{"prompt": "{}", "max_tokens": 1}}"#,
        "word ".repeat(2000)
    );
    let (status, resp) = post(&s.base, "/v1/completions", &long_prompt);
    assert_eq!(status, 400, "{resp}");
    assert_eq!(json(&resp)["error"]["code"], "context_length_exceeded");
}

#[test]
fn oversized_body_gets_413() {
    let s = start_server(&["--max-body", "1000"]);
    let body = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(5000));
    let (status, resp) = post(&s.base, "/v1/completions", &body);
    assert_eq!(status, 413, "{resp}");
    assert!(json(&resp)["error"]["message"].is_string());
}

#[test]
fn concurrent_clients_are_all_served() {
    let s = start_server(&[]);
    let base = s.base.clone();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let req = format!(
                    r#"{{"prompt": "client {i} says", "max_tokens": 6, "temperature": 0}}"#
                );
                post(&base, "/v1/completions", &req)
            })
        })
        .collect();
    for h in handles {
        let (status, body) = h.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(json(&body)["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn a_client_that_disconnects_cancels_its_generation() {
    // One slot: a long generation that is not cancelled would block the next request.
    let s = start_server_with_ctx("4096", &["--parallel", "1"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let body =
        r#"{"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0, "stream": true}"#;
    {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    } // dropped: the client is gone
    let (status, resp) = post(
        &s.base,
        "/v1/completions",
        r#"{"prompt": "x", "max_tokens": 2, "temperature": 0}"#,
    );
    assert_eq!(status, 200, "{resp}");
    assert!(json(&resp)["usage"]["completion_tokens"].as_u64().unwrap() <= 2);
    // The slot served the second request only after the first one ended: it must have been
    // cancelled early (while queued or while generating), not run to its 3000 tokens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (log, cancelled) = loop {
        let log = s.log.lock().unwrap().clone();
        let found = log
            .iter()
            .find_map(|l| l.strip_prefix("request cancelled: client disconnected after "))
            .map(str::to_string);
        match found {
            Some(c) => break (log, c),
            None if Instant::now() > deadline => panic!("no cancellation logged: {log:#?}"),
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let n: u32 = cancelled
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        n < 3000,
        "generation ran to the end ({n} tokens) despite the disconnect"
    );
    assert!(
        !log.iter().any(|l| l.contains("3000 generated")),
        "{log:#?}"
    );
}
