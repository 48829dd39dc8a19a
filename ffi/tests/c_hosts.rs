//! Real C and C++ programs (tests/c/) compiled against include/bitnet.h and linked with the
//! libbitnet.so / libbitnet.a cargo built for these tests; run directly and under valgrind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bitnet_candle::SamplingParams;

const PROMPT: &str = "In 2025 the team measured 31 tokens per second, and they're sure it'll";

enum Link {
    Shared,
    Static,
}

/// System libraries a Rust staticlib needs on Linux (`rustc --print native-static-libs`).
const STATIC_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// Compiles `tests/c/<source>` against include/bitnet.h into the scratch dir with warnings as
/// errors.
fn compile(source: &str, link: Link) -> PathBuf {
    compile_with(source, link, &common::repo_root().join("include"), "")
}

/// [`compile`] against the bitnet.h in `include` (`tag` names the executable).
fn compile_with(source: &str, link: Link, include: &Path, tag: &str) -> PathBuf {
    let root = common::repo_root();
    let lib_dir = common::lib_dir();
    let cxx = source.ends_with(".cpp");
    let (compiler, std) = match cxx {
        true => (
            std::env::var("CXX").unwrap_or_else(|_| "c++".into()),
            "-std=c++17",
        ),
        false => (
            std::env::var("CC").unwrap_or_else(|_| "cc".into()),
            "-std=c11",
        ),
    };
    let out_dir = common::scratch_dir().join("c");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = source.rsplit_once('.').unwrap().0;
    let suffix = match link {
        Link::Shared => "",
        Link::Static => "-static",
    };
    let exe = out_dir.join(format!("{stem}{suffix}{tag}-{}", std::process::id()));
    let mut cmd = Command::new(&compiler);
    cmd.args([
        std,
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        "-O1",
        "-g",
        "-pthread",
    ])
    .arg("-I")
    .arg(include)
    .arg(root.join("tests/c").join(source))
    .arg("-o")
    .arg(&exe);
    match link {
        Link::Shared => {
            cmd.arg(format!("-L{}", lib_dir.display()))
                .arg("-lbitnet")
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
        }
        Link::Static => {
            cmd.arg(lib_dir.join("libbitnet.a")).args(STATIC_LIBS);
        }
    }
    cmd.arg("-lm");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
    assert!(
        out.status.success(),
        "compiling {source} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a C host");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What simple.c / simple_cpp.cpp print for the Rust API's generation.
fn expected_stdout(n_predict: usize, sampling: SamplingParams) -> String {
    let (ids, text) = common::rust_generate(PROMPT, n_predict, sampling);
    let ids: String = ids.iter().map(|i| format!(" {i}")).collect();
    format!("ids:{ids}\ntext: {text}\n")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn simple_c_greedy_prints_the_tokens_of_the_rust_api() {
    let exe = compile("simple.c", Link::Shared);
    let out = run(Command::new(exe).arg(common::gguf()).arg(PROMPT).arg("24"));
    assert_eq!(stdout(&out), expected_stdout(24, SamplingParams::default()));
}

#[test]
fn simple_c_seeded_sampling_prints_the_tokens_of_the_rust_api() {
    let exe = compile("simple.c", Link::Shared);
    let args = ["0.9", "50", "0.95", "1.1", "1234"];
    let out = run(Command::new(exe)
        .arg(common::gguf())
        .arg(PROMPT)
        .arg("24")
        .args(args));
    let sampling = SamplingParams {
        temperature: 0.9,
        top_k: 50,
        top_p: 0.95,
        repeat_penalty: 1.1,
        seed: 1234,
        ..SamplingParams::default()
    };
    let expect = expected_stdout(24, sampling);
    assert_ne!(expect, expected_stdout(24, SamplingParams::default()));
    assert_eq!(stdout(&out), expect);
}

#[test]
fn simple_c_linked_statically_prints_the_same_tokens() {
    let exe = compile("simple.c", Link::Static);
    let out = run(Command::new(exe).arg(common::gguf()).arg(PROMPT).arg("12"));
    assert_eq!(stdout(&out), expected_stdout(12, SamplingParams::default()));
}

#[test]
fn a_host_built_against_api_1_runs_unchanged() {
    let api1 = common::repo_root().join("tests/c/api1");
    let exe = compile_with("simple.c", Link::Shared, &api1, "-api1");
    let out = run(Command::new(exe).arg(common::gguf()).arg(PROMPT).arg("16"));
    assert_eq!(stdout(&out), expected_stdout(16, SamplingParams::default()));
}

/// Prompts of different lengths for batched.c, and what each must generate.
fn batched_case(n_predict: usize) -> (Vec<&'static str>, String) {
    let prompts = vec![
        PROMPT,
        "Hi",
        "The quick brown fox jumps over the lazy dog, twice, and then",
        "1 2 3",
    ];
    let mut want = String::new();
    for (i, p) in prompts.iter().enumerate() {
        let (ids, _) = common::rust_generate(p, n_predict - i, SamplingParams::default());
        let ids: String = ids.iter().map(|t| format!(" {t}")).collect();
        want.push_str(&format!("ids[{i}]:{ids}\n"));
    }
    want.push_str("batched: ok\n");
    (prompts, want)
}

#[test]
fn batched_c_decodes_four_prompts_in_one_context_like_their_solo_runs() {
    let exe = compile("batched.c", Link::Shared);
    let (prompts, want) = batched_case(14);
    let out = run(Command::new(exe)
        .arg(common::gguf())
        .arg("14")
        .args(prompts));
    assert_eq!(stdout(&out), want);
}

#[test]
fn simple_cpp_threads_sharing_one_model_print_the_rust_tokens() {
    let exe = compile("simple_cpp.cpp", Link::Shared);
    let out = run(Command::new(exe)
        .arg(common::gguf())
        .arg(PROMPT)
        .arg("16")
        .arg("3"));
    assert_eq!(stdout(&out), expected_stdout(16, SamplingParams::default()));
}

#[test]
fn misuse_c_gets_error_codes_and_never_crashes() {
    let exe = compile("misuse.c", Link::Shared);
    let not_a_model = common::repo_root().join("tests/c/misuse.c");
    let out = run(Command::new(exe).arg(common::gguf()).arg(not_a_model));
    assert!(stdout(&out).starts_with("misuse: all "), "{}", stdout(&out));
}

/// valgrind, or None when the caller explicitly opted out with BITNET_SKIP_VALGRIND=1.
fn valgrind() -> Option<PathBuf> {
    if std::env::var("BITNET_SKIP_VALGRIND").is_ok_and(|v| v == "1") {
        eprintln!("BITNET_SKIP_VALGRIND=1: not running the C hosts under valgrind");
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("valgrind"))
            .find(|p| p.is_file())
    });
    Some(found.expect(
        "valgrind is required for the memory checks of the C API (tests/setup.sh installs it; \
         set BITNET_SKIP_VALGRIND=1 to skip them)",
    ))
}

fn memcheck(valgrind: &Path, exe: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let supp = common::repo_root().join("tests/c/valgrind.supp");
    run(Command::new(valgrind)
        .args([
            "--error-exitcode=1",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,possible",
            "--show-leak-kinds=definite,possible",
        ])
        .arg(format!("--suppressions={}", supp.display()))
        .arg(exe)
        .args(args)
        // The kernels' worker pool is exercised by the other tests; two threads keep this quick.
        .env("BITNET_NUM_THREADS", "2"))
}

#[test]
fn valgrind_reports_no_errors_or_leaks() {
    let Some(vg) = valgrind() else { return };
    let gguf = common::gguf().as_os_str();

    let misuse = compile("misuse.c", Link::Shared);
    let not_a_model = common::repo_root().join("tests/c/misuse.c");
    let out = memcheck(&vg, &misuse, &[gguf, not_a_model.as_os_str()]);
    assert!(stdout(&out).starts_with("misuse: all "));

    let simple = compile("simple.c", Link::Shared);
    let out = memcheck(&vg, &simple, &[gguf, PROMPT.as_ref(), "6".as_ref()]);
    assert_eq!(stdout(&out), expected_stdout(6, SamplingParams::default()));

    let cpp = compile("simple_cpp.cpp", Link::Shared);
    let out = memcheck(
        &vg,
        &cpp,
        &[gguf, PROMPT.as_ref(), "4".as_ref(), "2".as_ref()],
    );
    assert_eq!(stdout(&out), expected_stdout(4, SamplingParams::default()));

    let batched = compile("batched.c", Link::Shared);
    let (prompts, want) = batched_case(5);
    let mut args = vec![gguf, "5".as_ref()];
    args.extend(prompts.iter().map(std::ffi::OsStr::new));
    assert_eq!(stdout(&memcheck(&vg, &batched, &args)), want);
}
