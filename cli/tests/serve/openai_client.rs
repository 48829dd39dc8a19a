//! The official `openai` Python client against the server (tests/serve/openai_client.py):
//! completions and chat, streaming and not, 8 concurrent clients equal to their solo runs,
//! 4xx error bodies, a client leaving mid-stream, and /metrics through Prometheus' parser.

use crate::python::python_with;
use crate::server::*;

/// The packages tests/requirements-serve.txt pins for the client scripts.
pub const CLIENT_PACKAGES: &[(&str, &str)] =
    &[("openai", "3.60.0"), ("prometheus-client", "0.26.0")];

#[test]
fn the_openai_python_client_gets_what_it_expects() {
    let py = python_with(CLIENT_PACKAGES);
    let s = start_server_with_ctx("2048", &["--parallel", "4"]);
    let stdout = s.run_client_script(&py, "openai_client.py", &[]);
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
