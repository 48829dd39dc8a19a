//! Hub repo ids: downloads into the standard Hugging Face cache layout from a local mock hub,
//! offline use of the cache, and prompt, clear errors (naming the cache folder) when the hub is
//! unreachable, stalls, or lacks a file.

mod common;

#[path = "common/mock_hub.rs"]
mod mock_hub;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use bitnet_backend::gguf::GgufFile;
use bitnet_convert::hf::hub::{fetch, fetch_file, list_files};
use bitnet_convert::{convert, ConvertError, ConvertOptions, HubConfig, NoProgress, OutType};
use common::*;
use mock_hub::{mock_hub, repo_files, COMMIT};

fn hub_config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(2),
    }
}

#[test]
fn downloads_into_the_standard_cache_then_works_offline() {
    let ck = generate(Spec::two_b4t());
    let files = repo_files(ck.path());
    let (endpoint, gets) = mock_hub("org/tiny-bitnet", files.clone());
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config(&endpoint, cache.path());

    let dir = fetch("org/tiny-bitnet", "main", &cfg, &NoProgress).unwrap();
    let repo = cache.path().join("models--org--tiny-bitnet");
    assert_eq!(dir, repo.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    for (name, bytes) in &files {
        let p = dir.join(name);
        assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{name}");
        #[cfg(unix)]
        {
            let target = std::fs::read_link(&p).unwrap();
            assert!(
                target.starts_with("../../blobs"),
                "{name} -> {}",
                target.display()
            );
        }
    }
    let n_gets = gets.load(Ordering::SeqCst);
    assert_eq!(n_gets, files.len());

    // A second fetch is served from the cache, without downloading anything.
    fetch("org/tiny-bitnet", "main", &cfg, &NoProgress).unwrap();
    assert_eq!(gets.load(Ordering::SeqCst), n_gets);

    // Offline, with an endpoint nobody listens on: the cache alone suffices.
    let offline = HubConfig {
        offline: true,
        endpoint: "http://127.0.0.1:9".into(),
        ..cfg.clone()
    };
    let dir2 = fetch("org/tiny-bitnet", "main", &offline, &NoProgress).unwrap();
    assert_eq!(dir2, dir);
    // ...and by commit hash too.
    fetch("org/tiny-bitnet", COMMIT, &offline, &NoProgress).unwrap();

    // The snapshot folder converts like any local folder.
    let out = cache.path().join("m.gguf");
    bitnet_convert::convert_to(&dir, &out, OutType::I2S).unwrap();
    assert_eq!(
        GgufFile::open(&out).unwrap().architecture().unwrap(),
        "bitnet-b1.58"
    );
}

#[test]
fn interrupted_download_resumes() {
    let ck = generate(Spec::two_b4t());
    let files = repo_files(ck.path());
    let (endpoint, _) = mock_hub("org/resume", files.clone());
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config(&endpoint, cache.path());
    // Leave the first 1000 bytes of the weights as an incomplete blob, as a killed download would.
    let weights = &files["model.safetensors"];
    let etag = format!(
        "{:016x}{:08x}",
        weights
            .iter()
            .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64)),
        weights.len()
    );
    let blobs = cache.path().join("models--org--resume/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{etag}.incomplete")), &weights[..1000]).unwrap();
    let dir = fetch("org/resume", "main", &cfg, &NoProgress).unwrap();
    assert_eq!(
        &std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(!blobs.join(format!("{etag}.incomplete")).exists());
}

#[test]
fn offline_with_an_empty_cache_names_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = HubConfig {
        offline: true,
        ..hub_config("http://127.0.0.1:9", cache.path())
    };
    let e = fetch("org/absent", "main", &cfg, &NoProgress).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ConvertError::Hub { .. }), "{text}");
    assert!(
        text.contains("offline") && text.contains("config.json"),
        "{text}"
    );
    assert!(
        text.contains(
            &cache
                .path()
                .join("models--org--absent")
                .display()
                .to_string()
        ),
        "{text}"
    );
}

#[test]
fn unreachable_hub_is_an_error_not_a_hang() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config(&format!("http://127.0.0.1:{port}"), cache.path());
    let e = fetch("org/model", "main", &cfg, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot reach") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
    assert!(e.contains(&cache.path().display().to_string()), "{e}");
}

#[test]
fn stalled_hub_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Accept connections, read the request, never answer.
    thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            held.push(s);
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config(&endpoint, cache.path());
    let e = fetch("org/model", "main", &cfg, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot reach") && e.contains("org/model"), "{e}");
}

#[test]
fn missing_weights_on_the_hub() {
    let ck = generate(Spec::two_b4t());
    let mut files = repo_files(ck.path());
    files.remove("model.safetensors");
    let (endpoint, _) = mock_hub("org/noweights", files);
    let cache = tempfile::tempdir().unwrap();
    let e = fetch(
        "org/noweights",
        "main",
        &hub_config(&endpoint, cache.path()),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("has no file `model.safetensors`"),
        "{e}"
    );
}

#[test]
fn bad_revision_is_rejected() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config("http://127.0.0.1:9", cache.path());
    for rev in ["../x", "", "a//b"] {
        let e = fetch("org/m", rev, &cfg, &NoProgress).unwrap_err();
        assert!(e.to_string().contains("revision"), "{e}");
    }
}

/// The only test here that touches the environment (tests in a binary share it).
#[test]
fn convert_reads_hub_settings_from_the_environment() {
    let ck = generate(Spec::two_b4t());
    let (endpoint, _) = mock_hub("org/env-model", repo_files(ck.path()));
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HOME", home.path());
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_ENDPOINT", &endpoint);
    std::env::set_var("HF_HUB_OFFLINE", "0");
    let mut opts = ConvertOptions::new("org/env-model");
    opts.outfile = Some(work.path().join("m.gguf"));
    opts.outtype = OutType::Tq2_0;
    let s = convert(&opts, &NoProgress).unwrap();
    assert!(s.output.is_file());
    let snapshot = home
        .path()
        .join("hub/models--org--env-model/snapshots")
        .join(COMMIT);
    assert!(snapshot.join("config.json").is_file());
    let f = GgufFile::open(&s.output).unwrap();
    assert_eq!(f.get_str("general.name").unwrap(), "env-model");

    // HF_HUB_OFFLINE=1 uses the cache and never the endpoint.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    convert(&opts, &NoProgress).unwrap();
    let mut missing = ConvertOptions::new("org/never-downloaded");
    missing.outfile = Some(work.path().join("x.gguf"));
    let e = convert(&missing, &NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("offline") && e.contains("models--org--never-downloaded"),
        "{e}"
    );
    for k in ["HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE"] {
        std::env::remove_var(k);
    }
}

#[test]
fn lists_files_and_fetches_one() {
    let ck = generate(Spec::two_b4t());
    let files = repo_files(ck.path());
    let (endpoint, gets) = mock_hub("org/listing", files.clone());
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config(&endpoint, cache.path());
    let mut listed = list_files("org/listing", "main", &cfg).unwrap();
    listed.sort();
    let mut want: Vec<String> = files.keys().cloned().collect();
    want.sort();
    assert_eq!(listed, want);

    let p = fetch_file("org/listing", "main", "tokenizer.json", &cfg, &NoProgress).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), files["tokenizer.json"]);
    assert_eq!(
        gets.load(Ordering::SeqCst),
        1,
        "exactly one file downloaded"
    );
    let e = fetch_file("org/listing", "main", "../config.json", &cfg, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("not a plain file name"), "{e}");

    // Offline: the cached snapshot holds exactly what was fetched.
    let offline = HubConfig {
        offline: true,
        ..cfg.clone()
    };
    assert_eq!(
        list_files("org/listing", "main", &offline).unwrap(),
        vec!["tokenizer.json".to_string()]
    );
    let e = list_files("org/other", "main", &offline)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("offline") && e.contains("models--org--other"),
        "{e}"
    );
}
