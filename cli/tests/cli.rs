//! End-to-end tests of the `bitnet` binary (everything but `serve`, which has its own file).

mod common;

use common::*;

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "run",
        "chat",
        "bench",
        "perplexity",
        "serve",
        "info",
        "convert",
    ] {
        let o = bitnet(&[sub, "--help"]);
        assert!(o.status.success(), "{sub} --help failed: {}", stderr(&o));
        assert!(
            stdout(&o).contains("Usage: bitnet"),
            "{sub}: {}",
            stdout(&o)
        );
    }
    assert!(bitnet(&["--help"]).status.success());
}

#[test]
fn info_lists_metadata_and_tensors() {
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&["info", model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("general.architecture"), "{out}");
    assert!(out.contains("\"bitnet-b1.58\""), "{out}");
    assert!(out.contains("blk.0.attn_q.weight"), "{out}");
    assert!(out.contains("I2_S"), "{out}");
    assert!(out.contains("token_embd.weight"), "{out}");
}

#[test]
fn info_on_garbage_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let o = bitnet(&["info", bad.to_str().unwrap()]);
    assert_clean_failure(&o, "GGUF");
    let o = bitnet(&["info", "/nonexistent/model.gguf"]);
    assert_clean_failure(&o, "/nonexistent/model.gguf");
}

#[test]
fn run_streams_prompt_and_text_to_stdout_and_stats_to_stderr() {
    let model = tiny_model().to_str().unwrap();
    let args = [
        "run",
        "-m",
        model,
        "-p",
        "Hello world",
        "--temp",
        "0",
        "-n",
        "12",
        "-t",
        "2",
    ];
    let first = bitnet(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = stdout(&first);
    assert!(out.starts_with("Hello world"), "{out}");
    assert!(
        out.len() > "Hello world".len(),
        "nothing generated: {out:?}"
    );
    let err = stderr(&first);
    assert!(err.contains("tokens per second"), "{err}");
    assert!(!out.contains("tokens per second"));
    // Greedy decoding is deterministic.
    let second = bitnet(&args);
    assert_eq!(out, stdout(&second));
}

#[test]
fn run_errors_are_one_line() {
    let o = bitnet(&["run", "-m", "/nonexistent/x.gguf", "-p", "hi"]);
    assert_clean_failure(&o, "/nonexistent/x.gguf");
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&["run", "-m", model]);
    assert_clean_failure(&o, "-p");
    let o = bitnet(&["run", "-m", model, "-p", "hi", "--top-p", "7"]);
    assert_clean_failure(&o, "top_p");
}

#[test]
fn bench_writes_llama_bench_json() {
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&[
        "bench",
        "-m",
        model,
        "-p",
        "16",
        "-n",
        "4",
        "-r",
        "2",
        "-t",
        "1,2",
        "-o",
        "json",
        "--no-bandwidth",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    let records = v.as_array().expect("a list of records");
    assert_eq!(records.len(), 4);
    for r in records {
        for key in [
            "n_prompt",
            "n_gen",
            "n_threads",
            "avg_ts",
            "stddev_ts",
            "model_filename",
            "samples_ts",
        ] {
            assert!(r.get(key).is_some(), "record lacks {key}: {r}");
        }
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2);
    }
    let tests: Vec<(u64, u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r["n_prompt"].as_u64().unwrap(),
                r["n_gen"].as_u64().unwrap(),
                r["n_threads"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tests, vec![(16, 0, 1), (0, 4, 1), (16, 0, 2), (0, 4, 2)]);
}

#[test]
fn head_type_is_accepted_by_every_model_command_and_named_in_the_load_line() {
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&[
        "run",
        "-m",
        model,
        "-p",
        "Hi",
        "-n",
        "4",
        "--temp",
        "0",
        "--head-type",
        "q6_k",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("LM head Q6_K"), "{}", stderr(&o));
    for sub in ["chat", "perplexity", "serve"] {
        let o = bitnet(&[sub, "--help"]);
        assert!(stdout(&o).contains("--head-type"), "{sub}: {}", stdout(&o));
    }
    let o = bitnet(&["run", "-m", model, "-p", "Hi", "--head-type", "q5_k"]);
    assert_clean_failure(&o, "q5_k");
}

#[test]
fn bench_compares_head_types_in_one_run() {
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&[
        "bench",
        "-m",
        model,
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--head-type",
        "file,q4_0",
        "-o",
        "json",
        "--no-bandwidth",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    let heads: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["head_type"].as_str().unwrap())
        .collect();
    assert_eq!(heads, ["file", "q4_0"]);
    let bytes: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["weight_bytes_per_token"].as_u64().unwrap())
        .collect();
    // 300 × 256 values: F16 is 153 600 bytes, Q4_0 43 200.
    assert_eq!(bytes[0] - bytes[1], 153_600 - 43_200);
    assert!(stderr(&o).contains("head q4_0 is"), "{}", stderr(&o));
}

#[test]
fn bench_markdown_table() {
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&[
        "bench", "-m", model, "-p", "8", "-n", "2", "-r", "1", "-t", "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("| model"), "{out}");
    assert!(out.contains("pp8") && out.contains("tg2"), "{out}");
    assert!(out.contains("roofline"), "{out}");
}

#[test]
fn bench_batched_writes_llama_batched_bench_records() {
    let model = tiny_model().to_str().unwrap();
    // llama.cpp's one-dash spellings, JSON lines with llama-batched-bench's fields.
    let o = bitnet(&[
        "bench",
        "--batched",
        "-m",
        model,
        "-npp",
        "12",
        "-ntg",
        "5",
        "-npl",
        "1,3",
        "-t",
        "2",
        "-o",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect();
    assert_eq!(records.len(), 2);
    for (r, pl) in records.iter().zip([1u64, 3]) {
        for key in [
            "pp", "tg", "pl", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg", "t", "speed",
        ] {
            assert!(r.get(key).is_some(), "record lacks {key}: {r}");
        }
        assert_eq!((r["pp"].as_u64(), r["tg"].as_u64()), (Some(12), Some(5)));
        assert_eq!(r["pl"].as_u64(), Some(pl));
        assert_eq!(r["n_kv"].as_u64(), Some(pl * 17));
        let (t_tg, speed_tg) = (r["t_tg"].as_f64().unwrap(), r["speed_tg"].as_f64().unwrap());
        assert!((speed_tg * t_tg - (pl * 5) as f64).abs() < 1e-6 * speed_tg.max(1.0));
        assert!(r["speed_pp"].as_f64().unwrap() > 0.0);
    }
    // A shared prompt, the markdown table.
    let o = bitnet(&[
        "bench",
        "--batched",
        "-m",
        model,
        "--npp",
        "20",
        "--ntg",
        "3",
        "--npl",
        "4",
        "-pps",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("|    PP |     TG |    B |   N_KV |"), "{out}");
    assert!(out.contains("|    20 |      3 |    4 |     32 |"), "{out}");
}

#[test]
fn perplexity_reports_a_final_estimate() {
    let model = tiny_model().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(20),
    )
    .unwrap();
    let o = bitnet(&[
        "perplexity",
        "-m",
        model,
        "-f",
        text.to_str().unwrap(),
        "-c",
        "32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("Final estimate: PPL = "))
        .expect(&out);
    let ppl: f64 = line["Final estimate: PPL = ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ppl.is_finite() && ppl >= 1.0, "{line}");
    assert!(out.starts_with("[1]"), "{out}");
}

#[test]
fn convert_then_run_a_transformers_fixture() {
    let fixture = fixture_dir("bitnet-gqa4-autobitlinear");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let o = bitnet(&[
        "convert",
        fixture.to_str().unwrap(),
        "--outtype",
        "tq2_0",
        "--outfile",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.is_file());
    let o = bitnet(&["info", out.to_str().unwrap()]);
    assert!(stdout(&o).contains("TQ2_0"), "{}", stdout(&o));
    let o = bitnet(&[
        "run",
        "-m",
        out.to_str().unwrap(),
        "-p",
        "the",
        "--temp",
        "0",
        "-n",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A conversion killed outright (SIGKILL, power loss) cannot delete its temporary file; the next
/// conversion into that folder removes it with a one-line notice, but never the file of a
/// conversion that is still running.
#[test]
fn convert_removes_the_partial_files_of_killed_conversions_only() {
    use bitnet_backend::gguf::{GgmlType, GgufWriter, PARTIAL_PREFIX};

    let fixture = fixture_dir("bitnet-gqa4-autobitlinear");
    let dir = tempfile::tempdir().unwrap();
    // What a killed conversion leaves: a partial file that no process holds.
    let dead = dir.path().join(format!("{PARTIAL_PREFIX}Kill3d"));
    std::fs::write(&dead, vec![0u8; 300_000]).unwrap();
    // A conversion still writing into the same folder: this test process is its writer.
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    w.add_tensor("t", &[4], GgmlType::F32).unwrap();
    let mut live = w.begin(dir.path().join("other.gguf")).unwrap();
    let partials = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(PARTIAL_PREFIX)
            })
            .collect();
        v.sort();
        v
    };
    let live_partial: Vec<_> = partials().into_iter().filter(|p| *p != dead).collect();
    assert_eq!(live_partial.len(), 1);

    let out = dir.path().join("m.gguf");
    let convert = || {
        bitnet(&[
            "convert",
            fixture.to_str().unwrap(),
            "--outfile",
            out.to_str().unwrap(),
        ])
    };
    let o = convert();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let notices: Vec<&str> = err.lines().filter(|l| l.contains("removed")).collect();
    assert_eq!(notices.len(), 1, "{err}");
    assert!(
        notices[0].contains("Kill3d") && notices[0].contains("killed"),
        "{err}"
    );
    assert_eq!(
        partials(),
        live_partial,
        "only the killed conversion's file goes"
    );
    assert!(out.is_file());

    // The running conversion finishes undisturbed.
    live.write_tensor("t", &[0u8; 16]).unwrap();
    live.finish().unwrap();
    assert!(dir.path().join("other.gguf").is_file());
    assert!(partials().is_empty());

    // Nothing left to remove: no notice.
    let o = convert();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("removed"), "{}", stderr(&o));
}

#[test]
fn convert_of_a_missing_folder_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let o = bitnet(&[
        "convert",
        "/nonexistent/folder",
        "--outfile",
        out.to_str().unwrap(),
        "--offline",
    ]);
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn a_checkpoint_folder_runs_directly_like_its_conversion() {
    let fixture = fixture_dir("bitnet-gqa4-autobitlinear");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    // bf16 embedding: the checkpoint's own precision, so both models are the same.
    let o = bitnet(&[
        "convert",
        fixture.to_str().unwrap(),
        "--token-embedding-type",
        "bf16",
        "--outfile",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |model: &str| {
        bitnet(&[
            "run", "-m", model, "-p", "the cat", "--temp", "0", "-n", "12",
        ])
    };
    let from_folder = run(fixture.to_str().unwrap());
    assert!(from_folder.status.success(), "{}", stderr(&from_folder));
    let from_gguf = run(out.to_str().unwrap());
    assert!(from_gguf.status.success(), "{}", stderr(&from_gguf));
    assert_eq!(stdout(&from_folder), stdout(&from_gguf));
    assert!(
        stderr(&from_folder).contains("HF-packed"),
        "{}",
        stderr(&from_folder)
    );
    // Nothing was written next to the checkpoint or into a cache.
    let mut files = std::fs::read_dir(&fixture)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    files.sort();
    assert!(files.iter().all(|f| !f.ends_with(".gguf")), "{files:?}");

    // bench needs no tokenizer and takes the folder too.
    let o = bitnet(&[
        "bench",
        "-m",
        fixture.to_str().unwrap(),
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--no-bandwidth",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("HF-packed"), "{}", stdout(&o));
}

/// The tiny model with every `tokenizer.*` key removed.
fn tokenizer_less_model(dir: &std::path::Path) -> std::path::PathBuf {
    use bitnet_backend::gguf::{GgufFile, GgufWriter};
    let src = GgufFile::open(tiny_model()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        if !k.starts_with("tokenizer.") {
            w.add(k.clone(), v.clone()).unwrap();
        }
    }
    for t in src.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ggml_type).unwrap();
    }
    let path = dir.join("no-vocab.gguf");
    let mut out = w.begin(&path).unwrap();
    for t in src.tensors() {
        out.write_tensor(&t.name, src.tensor_data(t).unwrap())
            .unwrap();
    }
    out.finish().unwrap();
    path
}

#[test]
fn bench_and_info_need_no_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let model = tokenizer_less_model(dir.path());
    let model = model.to_str().unwrap();
    let o = bitnet(&["info", model]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("tokenizer.ggml"), "{}", stdout(&o));
    let o = bitnet(&[
        "bench",
        "-m",
        model,
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--no-bandwidth",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("pp8"), "{}", stdout(&o));
    // Generation does need one, and says so.
    let o = bitnet(&["run", "-m", model, "-p", "hi", "-n", "1"]);
    assert_clean_failure(&o, "tokenizer.ggml.model");
}

#[test]
fn device_errors_are_one_line() {
    let model = tiny_model().to_str().unwrap();
    let o = bitnet(&["run", "-m", model, "-p", "Hi", "-n", "1", "--device", "gpu"]);
    assert_clean_failure(&o, "unknown device `gpu`");
    if cfg!(feature = "cuda") {
        return;
    }
    let o = bitnet(&[
        "run", "-m", model, "-p", "Hi", "-n", "1", "--device", "cuda",
    ]);
    assert_clean_failure(&o, "no CUDA support");
    let o = bitnet(&[
        "bench", "-m", model, "-p", "1", "-n", "1", "-r", "1", "--device", "cuda:1",
    ]);
    assert_clean_failure(&o, "no CUDA support");
}
