//! The short version of the load test (tests/serve/load_test.py): a few streaming clients for
//! a few seconds on the tiny model, asserting that no request fails. The long version (32
//! clients, 60 s, a 2B4T-shaped model) is a benchmark: tests/serve/bench.sh.

use crate::openai_client::CLIENT_PACKAGES;
use crate::python::python_with;
use crate::server::*;

#[test]
fn a_short_load_test_has_no_failed_request() {
    let py = python_with(CLIENT_PACKAGES);
    let s = start_server_with_ctx("2048", &["--parallel", "4"]);
    let pid = s.pid().to_string();
    let stdout = s.run_client_script(
        &py,
        "load_test.py",
        &[
            "--clients",
            "6",
            "--duration",
            "3",
            "--prompt-tokens",
            "32",
            "--max-tokens",
            "24",
            "--server-pid",
            &pid,
            // Three seconds say nothing about leaks: only failures are asserted here.
            "--max-failures",
            "0",
            "--max-rss-growth",
            "100",
        ],
    );
    let report = json(&stdout);
    assert_eq!(report["requests_failed"], 0, "{stdout}");
    let ok = report["requests_ok"].as_u64().unwrap();
    assert!(ok >= 6, "{stdout}");
    assert_eq!(
        report["generated_tokens"].as_u64().unwrap(),
        24 * ok,
        "{stdout}"
    );
}
