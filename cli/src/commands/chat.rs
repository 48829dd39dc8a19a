//! `bitnet chat -m MODEL`: interactive multi-turn chat with the model's template.
//!
//! The conversation stays in the KV cache: each turn re-renders the whole conversation, and
//! the session recomputes only what differs from the cached tokens. Ctrl-C stops the current
//! answer; Ctrl-D (end of input) quits; `/clear` starts over.

use crate::args::{ModelArgs, SamplingArgs};
use crate::error::{CliError, CliResult};
use crate::model_source;
use bitnet_candle::{ChatMessage, Session};
use clap::Args;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System message that opens the conversation.
    #[arg(long = "system")]
    pub system: Option<String>,
}

pub fn run(args: &ChatArgs) -> CliResult {
    let loaded = model_source::load(&args.model)?;
    let model = &loaded.model;
    let n_ctx = args.model.ctx_size.unwrap_or(model.n_ctx_train());
    let mut session = Session::new(model, n_ctx, args.model.cache_type.into())?;

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .map_err(|e| CliError::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;
    }

    let opening: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.as_str()))
        .collect();
    let mut messages = opening.clone();
    eprintln!(
        "chat with {} — Ctrl-C stops an answer, Ctrl-D quits, /clear starts over",
        model.description()
    );

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("\n> ");
        let _ = std::io::stderr().flush();
        interrupted.store(false, Ordering::SeqCst);
        let line = match lines.next() {
            None => break,
            Some(Ok(line)) => line,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Some(Err(e)) => {
                return Err(CliError::Io {
                    what: "read",
                    path: "<stdin>".into(),
                    source: e,
                })
            }
        };
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if input == "/clear" {
            messages = opening.clone();
            session.reset();
            eprintln!("(conversation cleared)");
            continue;
        }
        messages.push(ChatMessage::new("user", input));
        let prompt = model.apply_chat_template(&messages, true)?;
        let ids = model.tokenizer().encode(&prompt, true)?;
        if ids.len() >= n_ctx {
            eprintln!(
                "(the conversation needs {} tokens but the context holds {}: it was cleared; use -c for a larger context)",
                ids.len(),
                n_ctx
            );
            messages = opening.clone();
            session.reset();
            continue;
        }
        let params = args.sampling.generation(n_ctx - ids.len());
        let mut stdout = std::io::stdout().lock();
        let generation = session.generate(&ids, &params, |piece| {
            if interrupted.load(Ordering::SeqCst) {
                return ControlFlow::Break(());
            }
            let ok = stdout
                .write_all(piece.as_bytes())
                .and_then(|_| stdout.flush());
            if ok.is_err() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        let _ = writeln!(stdout);
        if interrupted.load(Ordering::SeqCst) {
            eprintln!("(stopped)");
        }
        messages.push(ChatMessage::new("assistant", generation.text.as_str()));
    }
    eprintln!();
    Ok(())
}
