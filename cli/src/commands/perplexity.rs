//! `bitnet perplexity -m MODEL -f FILE`: perplexity over a text file, like llama-perplexity.
//!
//! The text is tokenized once and cut into chunks of `-c` tokens. Each chunk is evaluated from
//! an empty cache (its first token replaced by BOS when the vocabulary adds one), and only the
//! second half of each chunk is scored, so every scored token sees at least `c/2` tokens of
//! context — llama-perplexity's method, so the figures compare.

use crate::args::ModelArgs;
use crate::error::{CliError, CliResult};
use crate::model_source;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Score at most this many chunks [default: all].
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
}

/// Running negative log-likelihood statistics, as llama-perplexity keeps them.
#[derive(Default, Debug, Clone, Copy)]
pub struct NllStats {
    pub count: usize,
    pub sum: f64,
    pub sum_sq: f64,
}

impl NllStats {
    pub fn push(&mut self, nll: f64) {
        self.count += 1;
        self.sum += nll;
        self.sum_sq += nll * nll;
    }

    pub fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    /// One standard error of the perplexity estimate (delta method on the mean NLL).
    pub fn ppl_error(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        self.ppl() * (var / (n - 1.0)).sqrt()
    }
}

/// -log softmax(logits)[target], computed stably in f64.
pub fn token_nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum: f64 = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    log_sum - logits[target as usize] as f64
}

pub fn run(args: &PerplexityArgs) -> CliResult {
    let text = std::fs::read_to_string(&args.file).map_err(|e| CliError::Io {
        what: "read",
        path: args.file.clone(),
        source: e,
    })?;
    let loaded = model_source::load(&args.model)?;
    let model = &loaded.model;
    let n_ctx = args.model.ctx_size.unwrap_or(512).min(model.n_ctx_train());
    if n_ctx < 8 {
        return Err(CliError::Usage(format!(
            "-c {n_ctx} is too small to score anything (use at least 8)"
        )));
    }
    let tokens = model.tokenizer().encode(&text, false)?;
    let available = tokens.len() / n_ctx;
    let n_chunks = args.chunks.map_or(available, |c| c.min(available));
    if n_chunks == 0 {
        return Err(CliError::Usage(format!(
            "`{}` has {} tokens; one chunk needs -c = {n_ctx} (use a longer file or a smaller -c)",
            args.file.display(),
            tokens.len()
        )));
    }
    eprintln!(
        "perplexity: {} tokens, {n_chunks} chunks of {n_ctx}, scoring the second half of each",
        tokens.len()
    );
    let first = n_ctx / 2;
    let mut cache = model.new_cache(n_ctx, args.model.cache_type.into())?;
    let mut stats = NllStats::default();
    let start = Instant::now();
    let mut stdout = std::io::stdout().lock();
    for chunk in 0..n_chunks {
        let mut ids = tokens[chunk * n_ctx..(chunk + 1) * n_ctx].to_vec();
        if let Some(bos) = model.bos().filter(|_| model.tokenizer().adds_bos()) {
            ids[0] = bos;
        }
        cache.reset();
        let logits = model
            .forward_all(&mut cache, &ids, 0)?
            .to_vec2::<f32>()
            .map_err(bitnet_candle::Error::from)?;
        for pos in first..n_ctx - 1 {
            stats.push(token_nll(&logits[pos], ids[pos + 1]));
        }
        if chunk == 0 {
            let per_chunk = start.elapsed().as_secs_f64();
            eprintln!(
                "{:.2} seconds per pass - ETA {:.1} minutes",
                per_chunk,
                per_chunk * n_chunks as f64 / 60.0
            );
        }
        let _ = write!(stdout, "[{}]{:.4},", chunk + 1, stats.ppl());
        let _ = stdout.flush();
    }
    let _ = writeln!(stdout);
    let _ = writeln!(
        stdout,
        "Final estimate: PPL = {:.4} +/- {:.5}",
        stats.ppl(),
        stats.ppl_error()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let logits = vec![3.0f32; 10];
        assert!((token_nll(&logits, 4) - 10f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn nll_is_stable_for_huge_logits() {
        let logits = [1000.0f32, 0.0, -1000.0];
        assert!(token_nll(&logits, 0).abs() < 1e-12);
        assert!((token_nll(&logits, 1) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn perplexity_of_constant_nll() {
        let mut s = NllStats::default();
        for _ in 0..4 {
            s.push(2f64.ln());
        }
        assert!((s.ppl() - 2.0).abs() < 1e-12);
        assert!(s.ppl_error().abs() < 1e-12);
    }
}
