//! `bitnet run -m MODEL -p PROMPT`: one completion, streamed to stdout.
//!
//! stdout carries the prompt and the generated text only; load and speed figures go to stderr.

use crate::args::{ModelArgs, SamplingArgs};
use crate::error::{CliError, CliResult};
use crate::model_source;
use bitnet_candle::{ChatMessage, Session};
use clap::Args;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Wrap the prompt in the model's chat template as one user message.
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long = "system", requires = "chat")]
    pub system: Option<String>,
    /// Do not echo the prompt to stdout.
    #[arg(long = "no-display-prompt")]
    pub no_display_prompt: bool,
}

pub fn run(args: &RunArgs) -> CliResult {
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| CliError::Io {
            what: "read prompt file",
            path: f.clone(),
            source: e,
        })?,
        (None, None) => {
            return Err(CliError::Usage(
                "give a prompt with -p TEXT or -f FILE".into(),
            ))
        }
    };
    let loaded = model_source::load(&args.model)?;
    let model = &loaded.model;
    let text = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.push(ChatMessage::new("user", prompt.as_str()));
        model.apply_chat_template(&messages, true)?
    } else {
        prompt
    };
    let ids = model.tokenizer().encode(&text, true)?;
    let n_ctx = args.model.ctx_size.unwrap_or(model.n_ctx_train());
    let mut session = Session::new(model, n_ctx, args.model.cache_type.into())?;
    let params = args.sampling.generation(n_ctx.saturating_sub(ids.len()));

    let mut stdout = std::io::stdout().lock();
    if !args.no_display_prompt {
        write_flush(&mut stdout, &text)?;
    }
    let mut write_error = None;
    let generation = session.generate(&ids, &params, |piece| {
        match write_flush(&mut stdout, piece) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    writeln!(stdout).map_err(stdout_error)?;

    let prompt_s = generation.prompt_time.as_secs_f64();
    let gen_s = generation.gen_time.as_secs_f64();
    eprintln!();
    eprintln!(
        "load time:   {:10.2} ms",
        loaded.load_time.as_secs_f64() * 1e3
    );
    eprintln!(
        "prompt eval: {:10.2} ms / {:4} tokens ({:8.2} tokens per second)",
        prompt_s * 1e3,
        generation.n_prompt_eval,
        per_second(generation.n_prompt_eval, prompt_s)
    );
    eprintln!(
        "generation:  {:10.2} ms / {:4} tokens ({:8.2} tokens per second), stopped by {:?}",
        gen_s * 1e3,
        generation.tokens.len(),
        per_second(generation.tokens.len(), gen_s),
        generation.stop
    );
    Ok(())
}

pub fn per_second(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

fn write_flush(out: &mut impl Write, text: &str) -> CliResult {
    out.write_all(text.as_bytes()).map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}

fn stdout_error(e: std::io::Error) -> CliError {
    CliError::Io {
        what: "write",
        path: "<stdout>".into(),
        source: e,
    }
}
