//! The deployment examples: deploy/kubernetes.yaml against the Kubernetes API schemas
//! (kubernetes-validate from PyPI, strict: unknown fields fail), its `bitnet serve` flags
//! against the real command line, and deploy/haproxy.cfg through `haproxy -c`.

use crate::python::{python_with, workspace_root};
use std::process::Command;

#[test]
fn the_kubernetes_example_validates_and_uses_real_flags() {
    let py = python_with(&[("kubernetes-validate", "1.37.0")]);
    let manifest = workspace_root().join("deploy/kubernetes.yaml");
    for version in ["1.31.0", "1.37.0"] {
        let out = Command::new(&py)
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .arg(&manifest)
            .output()
            .expect("run kubernetes-validate");
        assert!(
            out.status.success(),
            "Kubernetes {version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let args = Command::new(&py)
        .arg("-c")
        .arg(
            "import sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d['kind'] == 'Deployment']\n\
             print('\\n'.join(docs[0]['spec']['template']['spec']['containers'][0]['args']))",
        )
        .arg(&manifest)
        .output()
        .expect("read the manifest");
    assert!(args.status.success());
    let args = String::from_utf8_lossy(&args.stdout).into_owned();
    let help = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(["serve", "--help"])
        .output()
        .expect("bitnet serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert_eq!(args.lines().next(), Some("serve"));
    for flag in args.lines().filter(|a| a.starts_with('-')) {
        let listed = help
            .split(|c: char| c.is_whitespace() || c == ',')
            .any(|w| w == flag);
        assert!(listed, "`{flag}` is not a `bitnet serve` flag:\n{help}");
    }
}

#[test]
fn the_haproxy_example_is_a_valid_configuration() {
    let out = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(workspace_root().join("deploy/haproxy.cfg"))
        .output()
        .expect("haproxy is not installed (Debian package `haproxy`; tests/setup.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
