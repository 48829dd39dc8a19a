//! A local stand-in for huggingface.co: serves a repo's files the way `/<repo>/resolve/<rev>/<file>`
//! (HEAD, GET with Range) and `/api/models/<repo>/revision/main` do, one request per connection.
//! Shared by the converter's and the CLI's hub tests (`#[path]`-included by the latter).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `files` like huggingface.co's `/<repo>/resolve/<rev>/<file>` (HEAD and GET with
/// Range), one request per connection. Returns the endpoint and a counter of GET requests.
pub fn mock_hub(repo: &str, files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    let prefix = format!("/{repo}/resolve/main/");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve(stream, &prefix, &files, &counter);
        }
    });
    (endpoint, gets)
}

fn serve(
    stream: TcpStream,
    prefix: &str,
    files: &HashMap<String, Vec<u8>>,
    gets: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_string(),
    );
    let mut range_start = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let mut out = stream;
    let api = format!(
        "/api/models/{}/revision/main",
        prefix
            .trim_start_matches('/')
            .trim_end_matches("/resolve/main/")
    );
    if method == "GET" && path == api {
        let siblings: Vec<serde_json::Value> = files
            .keys()
            .map(|f| serde_json::json!({"rfilename": f}))
            .collect();
        let body = serde_json::json!({"sha": COMMIT, "siblings": siblings}).to_string();
        return write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let file = path.strip_prefix(prefix).and_then(|f| files.get(f));
    let Some(body) = file else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let etag = format!(
        "{:016x}{:08x}",
        body.iter()
            .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64)),
        body.len()
    );
    let common = format!("X-Repo-Commit: {COMMIT}\r\nETag: \"{etag}\"\r\nConnection: close\r\n");
    if method == "HEAD" {
        return write!(
            out,
            "HTTP/1.1 200 OK\r\n{common}Content-Length: {}\r\n\r\n",
            body.len()
        );
    }
    gets.fetch_add(1, Ordering::SeqCst);
    let (status, part) = if range_start > 0 {
        ("206 Partial Content", &body[range_start..])
    } else {
        ("200 OK", &body[..])
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\n{common}Content-Length: {}\r\n\r\n",
        part.len()
    )?;
    out.write_all(part)
}

pub fn repo_files(dir: &Path) -> HashMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}
