//! `bitnet info MODEL`: metadata and a tensor table of any GGUF, including files this engine
//! cannot run (unknown tensor types are listed by their raw id).

use crate::error::CliResult;
use bitnet_backend::gguf::GgufFile;
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// GGUF file to inspect.
    pub model: PathBuf,
    /// Print array values in full instead of their first items.
    #[arg(long)]
    pub full: bool,
    /// Skip the tensor table.
    #[arg(long)]
    pub no_tensors: bool,
}

pub fn run(args: &InfoArgs) -> CliResult {
    let file = GgufFile::open(&args.model)?;
    print!("{}", render(&file, args));
    Ok(())
}

fn render(file: &GgufFile, args: &InfoArgs) -> String {
    let mut out = String::new();
    let file_bytes = file.mmap().len() as u64;
    let _ = writeln!(out, "file:      {}", args.model.display());
    let _ = writeln!(
        out,
        "format:    GGUF v{}, {} metadata keys, {} tensors, {}",
        file.version(),
        file.metadata().len(),
        file.tensors().len(),
        human_bytes(file_bytes)
    );

    let _ = writeln!(out, "\nmetadata:");
    let key_width = file
        .metadata()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (key, value) in file.metadata() {
        let shown = if args.full {
            full_value(value)
        } else {
            value.to_string()
        };
        let _ = writeln!(out, "  {key:<key_width$} = {shown}");
    }

    let mut per_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let entry = per_type.entry(t.ggml_type.name()).or_default();
        entry.0 += 1;
        entry.1 += t.n_bytes;
    }
    let _ = writeln!(out, "\ntensor types:");
    for (name, (count, bytes)) in &per_type {
        let _ = writeln!(
            out,
            "  {name:<12} {count:>5} tensors  {}",
            human_bytes(*bytes)
        );
    }

    if !args.no_tensors {
        let name_width = file
            .tensors()
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(out, "\ntensors:");
        let _ = writeln!(
            out,
            "  {:>4}  {:<name_width$}  {:<12}  {:<20}  {:>14}",
            "#", "name", "type", "shape", "bytes"
        );
        for (i, t) in file.tensors().iter().enumerate() {
            let shape = format!(
                "[{}]",
                t.dims
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = writeln!(
                out,
                "  {i:>4}  {:<name_width$}  {:<12}  {shape:<20}  {:>14}",
                t.name,
                t.ggml_type.name(),
                t.n_bytes
            );
        }
    }
    out
}

fn full_value(value: &bitnet_backend::gguf::Value) -> String {
    use bitnet_backend::gguf::Value;
    match value {
        Value::Array(_, items) => {
            let inner: Vec<String> = items.iter().map(full_value).collect();
            format!("[{}]", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// Bytes in the units llama.cpp prints (MiB/GiB) plus the exact count.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.2} GiB ({bytes} bytes)", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.2} MiB ({bytes} bytes)", b / (KIB * KIB))
    } else {
        format!("{bytes} bytes")
    }
}
