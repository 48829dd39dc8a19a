//! Shared by the integration tests: the fixture model as GGUF, its transformers reference, and
//! where cargo put libbitnet.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fixture used throughout: GQA, autobitlinear scales, as in the real 2B4T checkpoint.
pub const FIXTURE: &str = "bitnet-gqa4-autobitlinear";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ffi/ has a parent")
        .to_path_buf()
}

/// Scratch space of this package's integration tests inside the target dir.
pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bitnet-ffi");
    std::fs::create_dir_all(&dir).expect("creating the scratch dir");
    dir
}

/// The fixture converted to I2_S GGUF by bitnet-convert (once per test binary; the converter
/// writes atomically, so test binaries running at once never see a partial file).
pub fn gguf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let src = repo_root().join("tests/fixtures").join(FIXTURE);
        let out = scratch_dir().join(format!("{FIXTURE}-i2_s-{}.gguf", std::process::id()));
        bitnet_convert::convert_to(&src, &out, bitnet_convert::OutType::I2S)
            .unwrap_or_else(|e| panic!("converting {}: {e}", src.display()));
        out
    })
}

/// The prompt and greedy continuation transformers produced for the fixture.
pub struct Reference {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub new_ids: Vec<u32>,
}

pub fn reference() -> Reference {
    let path = repo_root()
        .join("tests/fixtures")
        .join(FIXTURE)
        .join("reference.json");
    let text = std::fs::read_to_string(&path).expect("reading reference.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parsing reference.json");
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .expect("an id array")
            .iter()
            .map(|i| i.as_u64().expect("an id") as u32)
            .collect()
    };
    Reference {
        prompt: v["prompt"]["text"]
            .as_str()
            .expect("prompt text")
            .to_owned(),
        prompt_ids: ids(&v["prompt"]["ids"]),
        new_ids: ids(&v["generation"]["new_ids"]),
    }
}

/// The folder holding libbitnet.so / libbitnet.a of this build: cargo builds the package's
/// library (all its crate types) before its integration tests, into `<target>/<profile>/deps/`
/// next to the test executable. (`<target>/<profile>/` may hold an older copy from an earlier
/// `cargo build`, so it is not used.)
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("the test executable's folder");
    for name in [shared_lib_name(), "libbitnet.a"] {
        assert!(
            deps.join(name).is_file(),
            "{name} not found next to {} (cargo builds it with the bitnet-ffi tests)",
            exe.display()
        );
    }
    deps.to_path_buf()
}

pub fn shared_lib_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libbitnet.dylib"
    } else {
        "libbitnet.so"
    }
}

/// Greedy or seeded generation with the Rust API: what C hosts must reproduce.
pub fn rust_generate(
    prompt: &str,
    n_predict: usize,
    sampling: bitnet_candle::SamplingParams,
) -> (Vec<u32>, String) {
    let model =
        bitnet_candle::Model::load(gguf(), &Default::default()).expect("loading the fixture");
    let ids = model.tokenizer().encode(prompt, true).expect("tokenizing");
    let mut session =
        bitnet_candle::Session::new(&model, ids.len() + n_predict, Default::default())
            .expect("session");
    let params = bitnet_candle::GenerationParams {
        max_new_tokens: n_predict,
        sampling,
        skip_special: true,
        ..Default::default()
    };
    let out = session
        .generate(&ids, &params, |_| std::ops::ControlFlow::Continue(()))
        .expect("generating");
    let text = model
        .tokenizer()
        .decode(&out.tokens, true)
        .expect("decoding");
    (out.tokens, text)
}
