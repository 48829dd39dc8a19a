//! `-m owner/name`: models from the Hugging Face hub, through the standard HF cache.
//!
//! A repo with GGUF files gives its I2_S file (or its only GGUF; `owner/name:file.gguf` picks
//! one). A repo with only safetensors is a checkpoint, loaded directly (no conversion).

use crate::error::{CliError, CliResult};
use crate::model_source::Source;
use bitnet_convert::hf::hub;
use bitnet_convert::{HubConfig, StderrProgress};

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

/// Resolves a hub model to its GGUF (downloaded into the HF cache) or its checkpoint.
pub fn resolve_repo(spec: &str, offline: bool) -> CliResult<Source> {
    let (repo, wanted) = split_spec(spec);
    let cfg = HubConfig::from_env(offline)?;
    let files = hub::list_files(repo, "main", &cfg)?;
    let progress = StderrProgress::new();
    if let Some(file) = pick_gguf(repo, &files, wanted)? {
        return Ok(Source::Gguf(hub::fetch_file(
            repo, "main", file, &cfg, &progress,
        )?));
    }
    if !files.iter().any(|f| f == "config.json") {
        return Err(CliError::Usage(format!(
            "repo `{repo}` has neither a GGUF file nor a Hugging Face checkpoint (config.json)"
        )));
    }
    Ok(Source::Checkpoint(repo.to_owned()))
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
