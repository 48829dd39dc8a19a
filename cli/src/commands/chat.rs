//! `bitnet chat -m MODEL`: interactive multi-turn chat with the model's template.
//!
//! The conversation stays in the KV cache: each turn re-renders the whole conversation, and
//! the session recomputes only what differs from the cached tokens. Ctrl-C stops the current
//! answer; at the prompt it only says how to quit (the terminal drops the half-typed line), and
//! never carries over to the next answer. Ctrl-D (end of input) quits; `/clear` starts over.

use crate::args::{ModelArgs, SamplingArgs};
use crate::error::{CliError, CliResult};
use crate::model_source;
use bitnet_candle::{ChatMessage, Session};
use clap::Args;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
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

    let events = Input::start()?;

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

    loop {
        eprint!("\n> ");
        let _ = std::io::stderr().flush();
        let line = match events.next() {
            Event::EndOfInput => break,
            Event::Line(line) => line,
            Event::Interrupt => {
                eprint!("\n(Ctrl-D quits)");
                continue;
            }
            Event::Error(e) => {
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
        let answer = events.answering();
        let generation = session.generate(&ids, &params, |piece| {
            if answer.stopped() {
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
        if answer.stopped() {
            eprintln!("(stopped)");
        }
        drop(answer);
        messages.push(ChatMessage::new("assistant", generation.text.as_str()));
    }
    eprintln!();
    Ok(())
}

/// What the prompt waits for.
enum Event {
    Line(String),
    /// Ctrl-C while no answer was being generated.
    Interrupt,
    EndOfInput,
    Error(std::io::Error),
}

/// Standard input and Ctrl-C as one stream of events. Lines are read on their own thread so
/// that a Ctrl-C at the prompt can be answered at once; while an answer is generated, Ctrl-C
/// only stops that answer.
struct Input {
    events: Receiver<Event>,
    answering: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Input {
    fn start() -> CliResult<Input> {
        let (tx, events) = mpsc::channel();
        let answering = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (answering, stop, tx) = (Arc::clone(&answering), Arc::clone(&stop), tx.clone());
            ctrlc::set_handler(move || {
                if answering.load(Ordering::SeqCst) {
                    stop.store(true, Ordering::SeqCst);
                } else {
                    let _ = tx.send(Event::Interrupt);
                }
            })
            .map_err(|e| CliError::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;
        }
        std::thread::spawn(move || read_lines(&tx));
        Ok(Input {
            events,
            answering,
            stop,
        })
    }

    fn next(&self) -> Event {
        self.events.recv().unwrap_or(Event::EndOfInput)
    }

    /// Marks an answer as under way until the guard is dropped: Ctrl-C now stops it.
    fn answering(&self) -> Answering<'_> {
        // Cleared before `answering` is set, so a Ctrl-C from the idle prompt never reaches
        // this answer.
        self.stop.store(false, Ordering::SeqCst);
        self.answering.store(true, Ordering::SeqCst);
        Answering { input: self }
    }
}

struct Answering<'a> {
    input: &'a Input,
}

impl Answering<'_> {
    fn stopped(&self) -> bool {
        self.input.stop.load(Ordering::SeqCst)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.input.answering.store(false, Ordering::SeqCst);
    }
}

fn read_lines(tx: &Sender<Event>) {
    for line in std::io::stdin().lock().lines() {
        let event = match line {
            Ok(line) => Event::Line(line),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Event::Error(e),
        };
        let failed = matches!(event, Event::Error(_));
        if tx.send(event).is_err() || failed {
            return;
        }
    }
    let _ = tx.send(Event::EndOfInput);
}
