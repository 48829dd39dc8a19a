//! `bitnet`: one binary for running, chatting with, benchmarking, serving, inspecting and
//! converting BitNet b1.58 models.

mod args;
mod commands;
mod error;
mod hub;
mod model_source;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bitnet", version, about = "Fast BitNet b1.58 inference on CPUs", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt (stdout: prompt and generated text; stats on stderr).
    Run(commands::run::RunArgs),
    /// Interactive multi-turn chat (Ctrl-C stops an answer, Ctrl-D quits).
    Chat(commands::chat::ChatArgs),
    /// Benchmark prompt processing and generation like llama-bench.
    Bench(commands::bench::BenchArgs),
    /// Perplexity of a text file, like llama-perplexity.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// OpenAI-compatible HTTP server.
    Serve(serve::ServeArgs),
    /// Show a GGUF file's metadata and tensor table (works on any GGUF, runnable or not).
    Info(commands::info::InfoArgs),
    /// Convert a Hugging Face checkpoint (folder or repo id) to GGUF.
    Convert(commands::convert::ConvertCommand),
}

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "bench") {
        args = commands::bench::llama_style_flags(args);
    }
    let cli = Cli::parse_from(args);
    let outcome = match cli.command {
        Command::Run(args) => commands::run::run(&args),
        Command::Chat(args) => commands::chat::run(&args),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Perplexity(args) => commands::perplexity::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Info(args) => commands::info::run(&args),
        Command::Convert(args) => commands::convert::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("{err:?}");
            }
            ExitCode::FAILURE
        }
    }
}
