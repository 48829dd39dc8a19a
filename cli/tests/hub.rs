//! Hub repo ids end to end: `bitnet run -m owner/name` against a local stand-in for
//! huggingface.co (`HF_ENDPOINT`), a GGUF repo downloaded into the standard HF cache layout and
//! then used offline, and a safetensors-only repo loaded directly (no conversion, no cache file).

mod common;

#[path = "../../convert/tests/common/mock_hub.rs"]
mod mock_hub;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::{fixture_dir, stderr, stdout, tiny_model};
use mock_hub::{mock_hub, repo_files, COMMIT};

/// `bitnet ARGS` with the hub at `endpoint` and every cache under `home`.
fn bitnet_hub(endpoint: &str, home: &Path, offline: bool, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitnet"));
    cmd.args(args)
        .env("BITNET_NUM_THREADS", "2")
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home.join("hf"))
        .env("BITNET_CACHE", home.join("bitnet"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("RUST_BACKTRACE");
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    } else {
        cmd.env_remove("HF_HUB_OFFLINE");
    }
    cmd.output().expect("run bitnet")
}

const RUN: [&str; 8] = ["-p", "Hello world", "--temp", "0", "-n", "8", "-t", "2"];

fn run_args(model: &str) -> Vec<&str> {
    let mut args = vec!["run", "-m", model];
    args.extend(RUN);
    args
}

#[test]
fn a_gguf_repo_is_downloaded_into_the_hf_cache_and_then_works_offline() {
    let gguf = std::fs::read(tiny_model()).unwrap();
    let files = HashMap::from([
        ("ggml-model-i2_s.gguf".to_string(), gguf.clone()),
        ("README.md".to_string(), b"# tiny\n".to_vec()),
    ]);
    let (endpoint, gets) = mock_hub("test-org/tiny-gguf", files);
    let home = tempfile::tempdir().unwrap();

    let from_hub = bitnet_hub(
        &endpoint,
        home.path(),
        false,
        &run_args("test-org/tiny-gguf"),
    );
    assert!(from_hub.status.success(), "{}", stderr(&from_hub));
    let cached = home
        .path()
        .join("hf/hub/models--test-org--tiny-gguf/snapshots")
        .join(COMMIT)
        .join("ggml-model-i2_s.gguf");
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        gguf,
        "{}",
        cached.display()
    );
    assert_eq!(gets.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Same text as running the local file.
    let local = common::bitnet(&run_args(tiny_model().to_str().unwrap()));
    assert!(local.status.success(), "{}", stderr(&local));
    assert_eq!(stdout(&from_hub), stdout(&local));

    // Offline, with the hub gone, the cache serves the model.
    let dead = "http://127.0.0.1:9";
    let offline = bitnet_hub(dead, home.path(), true, &run_args("test-org/tiny-gguf"));
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert_eq!(stdout(&offline), stdout(&local));

    // A repo the cache does not have: one clear error naming the cache, no panic.
    let missing = bitnet_hub(dead, home.path(), true, &run_args("test-org/other"));
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("test-org/other") || err.contains("test-org--other"),
        "{err}"
    );
}

#[test]
fn a_safetensors_repo_runs_directly_like_the_local_conversion() {
    let fixture = fixture_dir("bitnet-gqa4-autobitlinear");
    let (endpoint, _) = mock_hub("test-org/tiny-st", repo_files(&fixture));
    let home = tempfile::tempdir().unwrap();

    let first = bitnet_hub(&endpoint, home.path(), false, &run_args("test-org/tiny-st"));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!stderr(&first).contains("converting"), "{}", stderr(&first));
    assert!(
        !home.path().join("bitnet").exists(),
        "no conversion cache is written"
    );

    // The same model converted from the folder by hand (embedding kept in bf16, the
    // checkpoint's precision) gives the same text.
    let local = home.path().join("local.gguf");
    let conv = common::bitnet(&[
        "convert",
        fixture.to_str().unwrap(),
        "--token-embedding-type",
        "bf16",
        "--outfile",
        local.to_str().unwrap(),
    ]);
    assert!(conv.status.success(), "{}", stderr(&conv));
    let by_hand = common::bitnet(&run_args(local.to_str().unwrap()));
    assert!(by_hand.status.success(), "{}", stderr(&by_hand));
    assert_eq!(stdout(&first), stdout(&by_hand));

    // The second run uses the Hugging Face cache (offline: no hub needed at all).
    let second = bitnet_hub(
        "http://127.0.0.1:9",
        home.path(),
        true,
        &run_args("test-org/tiny-st"),
    );
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&second), stdout(&first));
}
