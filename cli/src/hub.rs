//! `-m owner/name`: models from the Hugging Face hub, through the standard HF cache.
//!
//! A repo with GGUF files gives its I2_S file (or its only GGUF; `owner/name:file.gguf` picks
//! one). A repo with only safetensors is converted once into `~/.cache/bitnet/converted/`.

use crate::error::{CliError, CliResult};
use bitnet_convert::hf::hub;
use bitnet_convert::{ConvertOptions, HubConfig, OutType, StderrProgress};
use std::path::PathBuf;

pub use bitnet_convert::hf::hub::looks_like_repo_id;

/// Splits `owner/name[:file.gguf]`.
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((repo, file)) if file.ends_with(".gguf") => (repo, Some(file)),
        _ => (spec, None),
    }
}

/// Picks the GGUF to run among a repo's files: the named one, else the I2_S one, else the only one.
pub fn pick_gguf<'a>(
    repo: &str,
    files: &'a [String],
    wanted: Option<&str>,
) -> CliResult<Option<&'a str>> {
    let ggufs: Vec<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|f| f.ends_with(".gguf"))
        .collect();
    if let Some(w) = wanted {
        return ggufs
            .iter()
            .find(|f| **f == w)
            .map(|f| Some(*f))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "repo `{repo}` has no file `{w}`; its GGUF files: {}",
                    ggufs.join(", ")
                ))
            });
    }
    match ggufs.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => match many
            .iter()
            .filter(|f| f.to_ascii_lowercase().contains("i2_s"))
            .collect::<Vec<_>>()
            .as_slice()
        {
            [one] => Ok(Some(one)),
            _ => Err(CliError::Usage(format!(
                "repo `{repo}` has several GGUF files ({}); pick one with -m {repo}:FILE.gguf",
                many.join(", ")
            ))),
        },
    }
}

/// Resolves a hub model to a local GGUF path, downloading or converting as needed.
pub fn fetch_model(spec: &str, offline: bool) -> CliResult<PathBuf> {
    let (repo, wanted) = split_spec(spec);
    let cfg = HubConfig::from_env(offline)?;
    let files = hub::list_files(repo, "main", &cfg)?;
    let progress = StderrProgress::new();
    if let Some(file) = pick_gguf(repo, &files, wanted)? {
        return Ok(hub::fetch_file(repo, "main", file, &cfg, &progress)?);
    }
    if !files.iter().any(|f| f == "config.json") {
        return Err(CliError::Usage(format!(
            "repo `{repo}` has neither a GGUF file nor a Hugging Face checkpoint (config.json)"
        )));
    }
    let converted = converted_path(repo)?;
    if converted.is_file() {
        return Ok(converted);
    }
    eprintln!(
        "`{repo}` has no GGUF: converting it to I2_S once, into {}",
        converted.display()
    );
    let mut options = ConvertOptions::new(repo);
    options.outtype = OutType::I2S;
    options.outfile = Some(converted.clone());
    options.offline = offline;
    if let Some(dir) = converted.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CliError::Io {
            what: "create",
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let summary = bitnet_convert::convert(&options, &progress)?;
    eprintln!("{summary}");
    Ok(converted)
}

fn converted_path(repo: &str) -> CliResult<PathBuf> {
    let base = std::env::var_os("BITNET_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("bitnet")))
        .or_else(|| {
            std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache").join("bitnet"))
        })
        .ok_or_else(|| {
            CliError::Usage("no home folder for the conversion cache; set BITNET_CACHE".into())
        })?;
    Ok(base
        .join("converted")
        .join(repo.replace('/', "--"))
        .join("ggml-model-i2_s.gguf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_i2s_file_among_several() {
        let files = names(&["README.md", "ggml-model-i2_s.gguf", "ggml-model-tq2_0.gguf"]);
        assert_eq!(
            pick_gguf("r", &files, None).unwrap(),
            Some("ggml-model-i2_s.gguf")
        );
    }

    #[test]
    fn picks_the_only_gguf_and_none_without() {
        assert_eq!(
            pick_gguf("r", &names(&["a.gguf"]), None).unwrap(),
            Some("a.gguf")
        );
        assert_eq!(
            pick_gguf("r", &names(&["config.json"]), None).unwrap(),
            None
        );
    }

    #[test]
    fn ambiguous_or_missing_choice_is_an_error() {
        let files = names(&["a.gguf", "b.gguf"]);
        assert!(pick_gguf("r", &files, None).is_err());
        assert!(pick_gguf("r", &files, Some("c.gguf")).is_err());
        assert_eq!(
            pick_gguf("r", &files, Some("b.gguf")).unwrap(),
            Some("b.gguf")
        );
    }

    #[test]
    fn spec_with_file() {
        assert_eq!(split_spec("o/n:x.gguf"), ("o/n", Some("x.gguf")));
        assert_eq!(split_spec("o/n"), ("o/n", None));
    }
}
