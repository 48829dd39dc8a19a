//! Hub repo ids → a local snapshot folder in the standard Hugging Face cache.
//!
//! The cache layout (`<cache>/models--org--name/{blobs,refs,snapshots}`) is hf-hub's, shared
//! with Python's huggingface_hub, so models downloaded by either are reused. Transfers use ureq
//! directly because hf-hub 0.5's blocking client cannot set timeouts: here a connection attempt
//! and every read give up after a bounded time, so an unreachable hub is a prompt error that
//! names the cache folder, never a hang. `HF_HUB_OFFLINE=1` (or `--offline`) uses the cache
//! only. Interrupted downloads resume from `blobs/<etag>.incomplete`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use crate::error::{ConvertError, Result};
use crate::progress::ProgressSink;

/// Where and how to reach the hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `HF_TOKEN`, else the token file of `HF_HOME`.
    pub token: Option<String>,
    /// Use the cache only.
    pub offline: bool,
    /// Limit for DNS resolution plus TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit for the response headers and for each read of the body.
    pub read_timeout: Duration,
}

impl HubConfig {
    /// Settings from the environment variables huggingface_hub uses.
    pub fn from_env(offline: bool) -> Result<Self> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let hf_home = env("HF_HOME")
            .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("huggingface")))
            .or_else(|| env("HOME").map(|p| p.join(".cache").join("huggingface")))
            .or_else(|| env("USERPROFILE").map(|p| p.join(".cache").join("huggingface")));
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            .ok_or_else(|| ConvertError::Input {
                input: "HF_HOME".into(),
                problem:
                    "no home folder to put the Hugging Face cache in; set HF_HOME or HF_HUB_CACHE"
                        .into(),
            })?;
        let token_file = hf_home.map(|h| h.join("token"));
        let token = std::env::var("HF_TOKEN")
            .ok()
            .or_else(|| token_file.and_then(|f| fs::read_to_string(f).ok()))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let truthy =
            |v: &str| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
        Ok(HubConfig {
            endpoint: std::env::var("HF_ENDPOINT")
                .unwrap_or_else(|_| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache_dir,
            token,
            offline: offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| truthy(&v)),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        })
    }
}

/// Whether `s` has the shape of a hub model id (`name` or `owner/name`).
pub fn looks_like_repo_id(s: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.ends_with('.')
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = s.split('/').collect();
    matches!(parts.as_slice(), [a] | [_, a] if ok_part(a)) && parts.iter().all(|p| ok_part(p))
}

/// Files of a model folder the converter may read, besides the weights.
const OPTIONAL_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "generation_config.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Resolves `repo_id` at `revision` to a snapshot folder holding everything the converter needs,
/// downloading what the cache lacks (unless offline).
pub fn fetch(
    repo_id: &str,
    revision: &str,
    cfg: &HubConfig,
    progress: &dyn ProgressSink,
) -> Result<PathBuf> {
    with_hub(repo_id, revision, cfg, |hub| {
        fetch_model_files(hub, progress)
    })
}

/// config.json, the weights (all shards) and whichever tokenizer files exist.
fn fetch_model_files(hub: &Hub, progress: &dyn ProgressSink) -> Result<PathBuf> {
    hub.require("config.json", progress)?;
    let index = hub.get("model.safetensors.index.json", progress)?;
    match index {
        Some(index) => {
            for shard in shard_names(&index)? {
                hub.require(&shard, progress)?;
            }
        }
        None => {
            hub.require("model.safetensors", progress)?;
        }
    }
    for f in OPTIONAL_FILES {
        hub.get(f, progress)?;
    }
    let config = hub.require("config.json", progress)?;
    Ok(config.parent().map(Path::to_path_buf).unwrap_or(config))
}

/// Downloads (or finds in the cache) one file of `repo_id` at `revision`.
pub fn fetch_file(
    repo_id: &str,
    revision: &str,
    file: &str,
    cfg: &HubConfig,
    progress: &dyn ProgressSink,
) -> Result<PathBuf> {
    if !looks_like_file_name(file) {
        return Err(ConvertError::Option(format!(
            "`{file}` is not a plain file name"
        )));
    }
    with_hub(repo_id, revision, cfg, |hub| hub.require(file, progress))
}

/// The files of `repo_id` at `revision`: from the hub's model API, or offline from the cached
/// snapshot of that revision.
pub fn list_files(repo_id: &str, revision: &str, cfg: &HubConfig) -> Result<Vec<String>> {
    with_hub(repo_id, revision, cfg, |hub| match &hub.agents {
        None => hub.cached_files(),
        Some(agents) => hub.remote_files(agents),
    })
}

fn with_hub<T>(
    repo_id: &str,
    revision: &str,
    cfg: &HubConfig,
    f: impl FnOnce(&Hub) -> Result<T>,
) -> Result<T> {
    let bad_revision = revision.is_empty()
        || revision.starts_with('/')
        || revision
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if bad_revision {
        return Err(ConvertError::Option(format!(
            "revision `{revision}` is not a branch, tag or commit name"
        )));
    }
    if !looks_like_repo_id(repo_id) {
        return Err(ConvertError::Option(format!(
            "`{repo_id}` is not a hub repo id (owner/name)"
        )));
    }
    let cache = Cache::new(cfg.cache_dir.clone());
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let repo_dir = cfg.cache_dir.join(repo.folder_name());
    let hub = Hub {
        cfg,
        cache: &cache,
        repo: &repo,
        repo_id,
        revision,
        repo_dir: &repo_dir,
        agents: if cfg.offline {
            None
        } else {
            Some(Agents::new(cfg))
        },
    };
    f(&hub)
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(index).map_err(|e| ConvertError::io("read", index, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ConvertError::json(index, format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ConvertError::json(index, "missing `weight_map` object"))?;
    let mut names: Vec<String> = Vec::new();
    for file in map.values() {
        let f = file
            .as_str()
            .filter(|f| looks_like_file_name(f))
            .ok_or_else(|| {
                ConvertError::json(index, format!("shard name {file} is not a plain file name"))
            })?;
        if !names.iter().any(|n| n == f) {
            names.push(f.to_string());
        }
    }
    Ok(names)
}

fn looks_like_file_name(f: &str) -> bool {
    !f.is_empty() && f != "." && f != ".." && !f.contains(['/', '\\'])
}

struct Agents {
    /// Reads headers of the first response (commit, etag, size) without following redirects.
    head: ureq::Agent,
    /// Follows redirects to the CDN for the data.
    get: ureq::Agent,
}

impl Agents {
    fn new(cfg: &HubConfig) -> Self {
        let build = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .timeout_resolve(Some(cfg.connect_timeout))
                .timeout_connect(Some(cfg.connect_timeout))
                .timeout_send_request(Some(cfg.read_timeout))
                .timeout_recv_response(Some(cfg.read_timeout))
                .timeout_per_read(Some(cfg.read_timeout))
                .user_agent(concat!("bitnet-convert/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        Agents {
            head: build(0),
            get: build(10),
        }
    }
}

struct Hub<'a> {
    cfg: &'a HubConfig,
    cache: &'a Cache,
    repo: &'a Repo,
    repo_id: &'a str,
    revision: &'a str,
    repo_dir: &'a Path,
    agents: Option<Agents>,
}

/// What the hub says about a file before it is downloaded.
struct Remote {
    commit: String,
    etag: String,
    size: Option<u64>,
}

impl Hub<'_> {
    fn err(&self, problem: impl Into<String>) -> ConvertError {
        ConvertError::Hub {
            repo: self.repo_id.to_string(),
            problem: problem.into(),
            cache: self.repo_dir.to_path_buf(),
        }
    }

    fn require(&self, file: &str, progress: &dyn ProgressSink) -> Result<PathBuf> {
        self.get(file, progress)?.ok_or_else(|| {
            if self.agents.is_none() {
                self.err(format!(
                    "`{file}` (revision {}) is not in the local cache and offline mode is on (HF_HUB_OFFLINE or --offline)",
                    self.revision
                ))
            } else {
                self.err(format!(
                    "the hub has no file `{file}` at revision {} (wrong repo id or revision, a private \
                     repo without HF_TOKEN, or not a model repo)",
                    self.revision
                ))
            }
        })
    }

    /// The local path of `file`, downloading it if needed; `None` if it does not exist.
    fn get(&self, file: &str, progress: &dyn ProgressSink) -> Result<Option<PathBuf>> {
        if let Some(p) = self.cached(file) {
            return Ok(Some(p));
        }
        let Some(agents) = &self.agents else {
            return Ok(None);
        };
        let Some(remote) = self.metadata(agents, file)? else {
            return Ok(None);
        };
        let cache_repo = self.cache.repo(self.repo.clone());
        let blob = self.repo_dir.join("blobs").join(&remote.etag);
        if !blob.is_file() {
            self.download(agents, file, &remote, &blob, progress)?;
        }
        let pointer = cache_repo.pointer_path(&remote.commit).join(file);
        link(&blob, &pointer).map_err(|e| ConvertError::io("link into the cache", &pointer, e))?;
        if remote.commit != self.revision {
            cache_repo
                .create_ref(&remote.commit)
                .map_err(|e| ConvertError::io("write ref in", self.repo_dir, e))?;
        }
        Ok(Some(pointer))
    }

    /// A file of this revision already in the cache (a ref name or a commit hash).
    fn cached(&self, file: &str) -> Option<PathBuf> {
        if let Some(p) = self.cache.repo(self.repo.clone()).get(file) {
            return Some(p);
        }
        // Refs written with a trailing newline, or a revision that is itself a commit hash.
        let commit = fs::read_to_string(self.repo_dir.join("refs").join(self.revision))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| self.revision.to_string());
        let snapshot = self.repo_dir.join("snapshots").join(commit).join(file);
        snapshot.is_file().then_some(snapshot)
    }

    /// Files of the cached snapshot of this revision (offline listing).
    fn cached_files(&self) -> Result<Vec<String>> {
        let commit = fs::read_to_string(self.repo_dir.join("refs").join(self.revision))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| self.revision.to_string());
        let snapshot = self.repo_dir.join("snapshots").join(commit);
        let entries = fs::read_dir(&snapshot).map_err(|_| {
            self.err(format!(
                "revision {} is not in the local cache and offline mode is on (HF_HUB_OFFLINE or --offline)",
                self.revision
            ))
        })?;
        let mut files: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        files.sort();
        Ok(files)
    }

    /// Files of this revision according to the hub's model API.
    fn remote_files(&self, agents: &Agents) -> Result<Vec<String>> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.cfg.endpoint, self.repo_id, self.revision
        );
        let mut resp = self
            .request(&agents.get, "GET", &url)
            .call()
            .map_err(|e| self.transport_error(&url, e))?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            401 | 403 => {
                return Err(self.err(format!(
                    "HTTP {status}: the repo is private or gated; accept its terms on the hub and set HF_TOKEN"
                )))
            }
            404 => return Err(self.err(format!("no such repo or revision ({url} answered 404)"))),
            _ => return Err(self.err(format!("HTTP {status} for {url}"))),
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| self.err(format!("reading {url}: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| self.err(format!("{url} sent invalid JSON: {e}")))?;
        let siblings = v
            .get("siblings")
            .and_then(Value::as_array)
            .ok_or_else(|| self.err(format!("{url} sent no `siblings` list")))?;
        Ok(siblings
            .iter()
            .filter_map(|s| s.get("rfilename").and_then(Value::as_str))
            .map(str::to_string)
            .collect())
    }

    fn url(&self, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{file}",
            self.cfg.endpoint, self.repo_id, self.revision
        )
    }

    fn request(
        &self,
        agent: &ureq::Agent,
        method: &str,
        url: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let req = if method == "HEAD" {
            agent.head(url)
        } else {
            agent.get(url)
        };
        match &self.cfg.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn transport_error(&self, url: &str, e: ureq::Error) -> ConvertError {
        self.err(format!(
            "cannot reach {url}: {e}; check the network, or use the cache only with HF_HUB_OFFLINE=1"
        ))
    }

    fn metadata(&self, agents: &Agents, file: &str) -> Result<Option<Remote>> {
        let url = self.url(file);
        let resp = self
            .request(&agents.head, "HEAD", &url)
            .call()
            .map_err(|e| self.transport_error(&url, e))?;
        let status = resp.status().as_u16();
        match status {
            200..=399 => {}
            404 => return Ok(None),
            401 | 403 => {
                return Err(self.err(format!(
                    "HTTP {status} for `{file}`: the repo is private or gated; accept its terms on the hub and set HF_TOKEN"
                )))
            }
            _ => return Err(self.err(format!("HTTP {status} for {url}"))),
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let commit = header("x-repo-commit").ok_or_else(|| {
            self.err(format!(
                "{url} did not send X-Repo-Commit; is HF_ENDPOINT a hub?"
            ))
        })?;
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .filter(|e| looks_like_file_name(e))
            .ok_or_else(|| self.err(format!("{url} sent no usable ETag")))?;
        if !looks_like_file_name(&commit) {
            return Err(self.err(format!("{url} sent an invalid commit `{commit}`")));
        }
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.parse().ok());
        Ok(Some(Remote { commit, etag, size }))
    }

    fn download(
        &self,
        agents: &Agents,
        file: &str,
        remote: &Remote,
        blob: &Path,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        let dir = blob.parent().unwrap_or(self.repo_dir);
        fs::create_dir_all(dir).map_err(|e| ConvertError::io("create", dir, e))?;
        let partial = blob.with_extension("incomplete");
        let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let url = self.url(file);
        let mut req = self.request(&agents.get, "GET", &url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.call().map_err(|e| self.transport_error(&url, e))?;
        let status = resp.status().as_u16();
        let resume = match status {
            206 if have > 0 => true,
            200 => false,
            _ => return Err(self.err(format!("HTTP {status} downloading {url}"))),
        };
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resume)
            .truncate(!resume)
            .open(&partial)
            .map_err(|e| ConvertError::io("create", &partial, e))?;
        let mut done = if resume { have } else { 0 };
        progress.begin(file, remote.size.unwrap_or(0));
        progress.advance(done, file);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if progress.cancelled() {
                return Err(ConvertError::Cancelled);
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(self.err(format!(
                        "download of `{file}` stopped after {done} bytes: {e}; run again to resume"
                    )))
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| ConvertError::io("write", &partial, e))?;
            done += n as u64;
            progress.advance(n as u64, file);
        }
        progress.end();
        out.sync_all()
            .map_err(|e| ConvertError::io("sync", &partial, e))?;
        drop(out);
        if let Some(size) = remote.size {
            if done != size {
                return Err(self.err(format!(
                    "`{file}`: got {done} bytes, the hub announced {size}; run again to resume"
                )));
            }
        }
        fs::rename(&partial, blob).map_err(|e| ConvertError::io("rename into", blob, e))?;
        Ok(())
    }
}

/// Makes `pointer` refer to `blob`: a relative symlink as huggingface_hub makes, or a copy
/// where symlinks are unavailable.
fn link(blob: &Path, pointer: &Path) -> std::io::Result<()> {
    if let Some(dir) = pointer.parent() {
        fs::create_dir_all(dir)?;
    }
    if pointer.exists() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file> -> ../../blobs/<etag>
        let depth = pointer.components().count() - blob.components().count() + 1;
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rel.push("..");
        }
        rel.push("blobs");
        rel.push(blob.file_name().unwrap_or_default());
        if std::os::unix::fs::symlink(&rel, pointer).is_ok() && pointer.exists() {
            return Ok(());
        }
        let _ = fs::remove_file(pointer);
    }
    fs::copy(blob, pointer).map(|_| ())?;
    File::open(pointer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_id_shapes() {
        for ok in [
            "microsoft/bitnet-b1.58-2B-4T",
            "1bitLLM/bitnet_b1_58-large",
            "gpt2",
        ] {
            assert!(looks_like_repo_id(ok), "{ok}");
        }
        for bad in [
            "",
            "/abs/path",
            "a/b/c",
            "../x",
            "owner/",
            "a b/c",
            "./model",
            "x/..",
        ] {
            assert!(!looks_like_repo_id(bad), "{bad}");
        }
    }
}
