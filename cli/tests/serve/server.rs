//! A `bitnet serve` child process on a loopback port, and small HTTP helpers.

use crate::common::tiny_model;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on the tiny model with a 256-token context, ready for requests.
pub fn start_server(extra: &[&str]) -> Server {
    start_server_with_ctx("256", extra)
}

pub fn start_server_with_ctx(ctx: &str, extra: &[&str]) -> Server {
    let model = tiny_model().to_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(["serve", "-m", &model, "--port", "0", "-c", ctx])
        .args(extra)
        .env("BITNET_NUM_THREADS", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start server");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let base = loop {
        assert!(Instant::now() < deadline, "server did not start: {seen:#?}");
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("server exited: {seen:#?}"))
            .expect("read stderr");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_string();
        }
        seen.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let log = Arc::new(Mutex::new(seen));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let server = Server { child, base, log };
    server.wait_ready();
    server
}

impl Server {
    /// Waits until `/health` answers 200 (the model is loaded).
    pub fn wait_ready(&self) {
        poll(
            Duration::from_secs(120),
            || (get(&self.base, "/health").0 == 200).then_some(()),
            || format!("server never became ready: {:#?}", self.log()),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let log = Arc::clone(&self.log);
        let child = &mut self.child;
        poll(
            limit,
            || child.try_wait().expect("wait"),
            || {
                format!(
                    "server still running after {limit:?}: {:#?}",
                    log.lock().unwrap()
                )
            },
        )
    }

    /// Waits until a log line contains `needle` and returns it.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> String {
        poll(
            limit,
            || self.log().into_iter().find(|l| l.contains(needle)),
            || format!("no log line with `{needle}`: {:#?}", self.log()),
        )
    }

    /// Runs a Python client script (`tests/serve/<script>`) against the server with `args`;
    /// returns its stdout, failing with its output and the server's log unless it succeeded.
    pub fn run_client_script(&self, py: &std::path::Path, script: &str, args: &[&str]) -> String {
        let out = Command::new(py)
            .arg(
                crate::python::workspace_root()
                    .join("tests/serve")
                    .join(script),
            )
            .arg(&self.base)
            .args(args)
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{script}: {stdout}\n{}\nserver log: {:#?}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }
}

/// Calls `attempt` every 20 ms until it gives a value; panics with `failure()` after `limit`.
pub fn poll<T>(
    limit: Duration,
    mut attempt: impl FnMut() -> Option<T>,
    failure: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

pub fn post(base: &str, path: &str, body: &str) -> (u16, String) {
    let mut resp = agent()
        .post(&format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body)
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}

pub fn get(base: &str, path: &str) -> (u16, String) {
    let mut resp = agent()
        .get(&format!("{base}{path}"))
        .call()
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

/// A free loopback port (bound and released; another process could take it in between).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
