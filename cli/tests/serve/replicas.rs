//! Two replicas behind HAProxy (Debian's package) with deploy/haproxy.cfg: streaming clients
//! through the balancer while one replica gets SIGTERM. No request may fail, the drained
//! replica exits 0, and the balancer marks it down and sends it nothing more.

use crate::python::workspace_root;
use crate::server::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Balancer(Child);

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request through the balancer, as its client saw it.
#[derive(Debug)]
struct Seen {
    started: Instant,
    finished: Instant,
    /// The replica that answered (its `--alias`), when the response was complete.
    replica: Result<String, String>,
}

/// A streamed completion through the balancer; `Ok(replica)` when the stream ended properly.
fn stream_once(base: &str) -> Result<String, String> {
    let body = r#"{"prompt": "Tell me a story", "max_tokens": 300, "temperature": 0, "stream": true, "ignore_eos": true}"#;
    let mut resp = agent()
        .post(&format!("{base}/v1/completions"))
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let data = sse_data(&text);
    if data.last().map(String::as_str) != Some("[DONE]") {
        return Err(format!("stream cut short: {text}"));
    }
    let finish = serde_json::from_str::<serde_json::Value>(&data[data.len() - 2])
        .map_err(|e| format!("{e}: {text}"))?;
    if finish["choices"][0]["finish_reason"] != "length" {
        return Err(format!("unexpected end: {text}"));
    }
    Ok(finish["model"].as_str().unwrap_or_default().to_string())
}

/// HAProxy's view of a server: the `status` column of its CSV statistics.
fn balancer_status(stats: &str, server: &str) -> String {
    let (_, csv) = get(stats, "/stats;csv");
    csv.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 17 && f[0] == "replicas" && f[1] == server)
        .map(|f| f[17].to_string())
        .unwrap_or_else(|| panic!("no row for {server} in\n{csv}"))
}

fn wait_for_status(stats: &str, server: &str, want: &str) {
    poll(
        Duration::from_secs(20),
        || {
            balancer_status(stats, server)
                .starts_with(want)
                .then_some(())
        },
        || format!("{server} is {}, not {want}", balancer_status(stats, server)),
    )
}

#[test]
fn replicas_behind_haproxy_survive_a_drain_under_load() {
    let haproxy_ok = Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        haproxy_ok,
        "haproxy is not installed (Debian package `haproxy`; tests/setup.sh installs it)"
    );
    // One sequence per replica, so requests queue and are in flight when the drain starts.
    let replica = |name: &str| {
        start_server_with_ctx(
            "4096",
            &["--alias", name, "--parallel", "1", "--drain-timeout", "60"],
        )
    };
    let mut r1 = replica("r1");
    let r2 = replica("r2");
    let (front, stats) = (free_port(), free_port());
    let config = std::fs::read_to_string(workspace_root().join("deploy/haproxy.cfg"))
        .expect("read deploy/haproxy.cfg")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{front}"))
        .replace("127.0.0.1:8081", &r1.addr())
        .replace("127.0.0.1:8082", &r2.addr())
        .replace("127.0.0.1:8404", &format!("127.0.0.1:{stats}"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    let haproxy_log = dir.path().join("haproxy.log");
    let _balancer = Balancer(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&haproxy_log).unwrap())
            .spawn()
            .expect("start haproxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in [front, stats] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not start: {}",
                std::fs::read_to_string(&haproxy_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (base, stats) = (
        format!("http://127.0.0.1:{front}"),
        format!("http://127.0.0.1:{stats}"),
    );
    wait_for_status(&stats, "r1", "UP");
    wait_for_status(&stats, "r2", "UP");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (base, stop, seen) = (base.clone(), Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let replica = stream_once(&base);
                    let finished = Instant::now();
                    seen.lock().unwrap().push(Seen {
                        started,
                        finished,
                        replica,
                    });
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let term = Instant::now();
    r1.terminate();
    let drain = r1.wait_log("SIGTERM: draining", Duration::from_secs(10));
    // From here on r1 admits nothing (it logs after it starts refusing).
    let draining = Instant::now();
    let status = r1.wait_exit(Duration::from_secs(60));
    wait_for_status(&stats, "r1", "DOWN");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }

    assert_eq!(status.code(), Some(0), "drained replica: {:#?}", r1.log());
    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen.iter().filter(|s| s.replica.is_err()).collect();
    assert!(
        failed.is_empty(),
        "failed requests: {failed:#?}\nhaproxy: {}",
        std::fs::read_to_string(&haproxy_log).unwrap_or_default()
    );
    let served_by = |name: &str| {
        seen.iter()
            .filter(|s| s.replica.as_deref() == Ok(name))
            .collect::<Vec<_>>()
    };
    let (by_r1, by_r2) = (served_by("r1"), served_by("r2"));
    assert!(!by_r1.is_empty() && !by_r2.is_empty(), "{seen:#?}");
    // Nothing sent once r1 was draining reached it: it answered 503 and HAProxy retried on
    // r2, or HAProxy had already marked it down.
    assert!(
        by_r1.iter().all(|s| s.started < draining),
        "r1 served a request sent while it was draining: {seen:#?}"
    );
    assert!(
        by_r2.iter().any(|s| s.started > draining),
        "no request was sent after the drain began"
    );
    // The drain let r1 finish what it had accepted.
    let drained = by_r1.iter().filter(|s| s.finished > term).count();
    assert!(
        drained >= 1,
        "no request in flight on r1 finished after the SIGTERM ({drain}): {seen:#?}"
    );
}
