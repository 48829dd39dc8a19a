//! Operations: /health, /metrics, /tokenize and /detokenize, and the drain on SIGTERM/SIGINT.

use crate::server::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A raw streaming request whose events can be read one line at a time.
struct Stream {
    lines: std::io::Lines<BufReader<TcpStream>>,
}

impl Stream {
    fn open(s: &Server, body: &str) -> Stream {
        let addr = s.addr();
        let mut tcp = TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            tcp,
            "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut lines = BufReader::new(tcp).lines();
        let status = lines.next().unwrap().unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        Stream { lines }
    }

    /// The next `data:` payload.
    fn next_data(&mut self) -> Option<String> {
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            if let Some(d) = line.trim().strip_prefix("data:") {
                return Some(d.trim().to_string());
            }
        }
        None
    }

    /// Every remaining `data:` payload, to the end of the response.
    fn rest(mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next_data()).collect()
    }
}

const LONG: &str = r#"{"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0, "stream": true, "ignore_eos": true}"#;

#[test]
fn metrics_count_requests_and_tokens() {
    let s = start_server(&["--parallel", "2"]);
    let (status, body) = post(
        &s.base,
        "/v1/completions",
        r#"{"prompt": "Hello", "max_tokens": 5, "temperature": 0, "ignore_eos": true}"#,
    );
    assert_eq!(status, 200, "{body}");
    let mut resp = agent().get(&format!("{}/metrics", s.base)).call().unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"));
    let text = resp.body_mut().read_to_string().unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in\n{text}"))
    };
    assert_eq!(value("bitnet_generated_tokens_total"), 5.0);
    assert!(value("bitnet_prompt_tokens_total") >= 1.0);
    assert_eq!(value("bitnet_requests_total{outcome=\"length\"}"), 1.0);
    assert_eq!(value("bitnet_time_to_first_token_seconds_count"), 1.0);
    assert_eq!(value("bitnet_time_per_output_token_seconds_count"), 4.0);
    assert_eq!(value("bitnet_requests_running"), 0.0);
    assert_eq!(value("bitnet_requests_queued"), 0.0);
    // -c is one budget shared by the --parallel sequences.
    assert_eq!(value("bitnet_kv_cache_capacity_tokens"), 256.0);
    assert!(value("bitnet_kv_cache_used_tokens") >= 5.0);
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn tokenize_and_detokenize_have_llama_server_shapes() {
    let s = start_server(&[]);
    let tok = |body: &str| {
        let (status, resp) = post(&s.base, "/tokenize", body);
        assert_eq!(status, 200, "{body} -> {resp}");
        json(&resp)["tokens"].clone()
    };
    let ids = tok(r#"{"content": "Hello world"}"#);
    let ids: Vec<u64> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(!ids.is_empty());
    // add_special prepends BOS; without it there is none.
    let with_bos = tok(r#"{"content": "Hello world", "add_special": true}"#);
    assert_eq!(with_bos.as_array().unwrap().len(), ids.len() + 1);
    // Special-token text is one id when parsed, plain text otherwise.
    let special = tok(r#"{"content": "<|eot_id|>"}"#);
    assert_eq!(special.as_array().unwrap().len(), 1, "{special}");
    let plain = tok(r#"{"content": "<|eot_id|>", "parse_special": false}"#);
    assert!(plain.as_array().unwrap().len() > 1, "{plain}");
    // Pieces: strings for valid UTF-8, byte arrays for partial characters; they concatenate
    // to the text.
    let pieces = tok(r#"{"content": "Hé", "with_pieces": true}"#);
    let mut bytes = Vec::new();
    let mut saw_bytes = false;
    for p in pieces.as_array().unwrap() {
        assert!(p["id"].is_u64(), "{p}");
        match &p["piece"] {
            serde_json::Value::String(t) => bytes.extend_from_slice(t.as_bytes()),
            serde_json::Value::Array(b) => {
                saw_bytes = true;
                bytes.extend(b.iter().map(|x| x.as_u64().unwrap() as u8));
            }
            other => panic!("piece {other}"),
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), "Hé");
    assert!(
        saw_bytes,
        "the tiny byte-level vocabulary splits é: {pieces}"
    );

    let body = format!(r#"{{"tokens": {}}}"#, serde_json::to_string(&ids).unwrap());
    let (status, resp) = post(&s.base, "/detokenize", &body);
    assert_eq!(status, 200, "{resp}");
    assert_eq!(json(&resp)["content"], "Hello world");
    for bad in [
        r#"{"tokens": [1, 99999]}"#,
        r#"{"tokens": [-1]}"#,
        r#"{"content": 5}"#,
    ] {
        let path = if bad.contains("content") {
            "/tokenize"
        } else {
            "/detokenize"
        };
        let (status, resp) = post(&s.base, path, bad);
        assert_eq!(status, 400, "{bad} -> {resp}");
        assert!(json(&resp)["error"]["message"].is_string());
    }
}

#[test]
fn sigterm_drains_the_requests_in_flight_then_exits_0() {
    let mut s = start_server_with_ctx("4096", &["--drain-timeout", "60"]);
    let mut stream = Stream::open(&s, &LONG.replace("3000", "400"));
    assert!(stream.next_data().is_some());
    s.terminate();
    s.wait_log("draining 1 requests in flight", Duration::from_secs(10));
    // Health and new work are refused while the stream goes on.
    let (status, body) = get(&s.base, "/health");
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["error"]["message"], "Shutting down");
    let (status, body) = post(&s.base, "/v1/completions", r#"{"prompt": "x"}"#);
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["error"]["type"], "unavailable_error");
    let rest = stream.rest();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let finish = json(&rest[rest.len() - 2]);
    assert_eq!(finish["choices"][0]["finish_reason"], "length", "{rest:?}");
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{:#?}", s.log());
    assert!(s.log().iter().any(|l| l.contains("request done")));
}

#[test]
fn the_drain_timeout_stops_what_is_left() {
    let mut s = start_server_with_ctx("4096", &["--drain-timeout", "0.3"]);
    let mut stream = Stream::open(&s, LONG);
    assert!(stream.next_data().is_some());
    let t = Instant::now();
    s.terminate();
    let rest = stream.rest();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let error = json(&rest[rest.len() - 2]);
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "{rest:?}"
    );
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{:#?}", s.log());
    assert!(t.elapsed() < Duration::from_secs(10));
    s.wait_log("drain timeout after", Duration::from_secs(1));
}

#[test]
fn sigint_on_an_idle_server_exits_0_at_once() {
    let mut s = start_server(&[]);
    let status = std::process::Command::new("kill")
        .args(["-INT", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{:#?}", s.log());
    s.wait_log("SIGINT: draining 0 requests", Duration::from_secs(1));
}
