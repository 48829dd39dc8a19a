//! `bitnet convert <HF folder or repo id> --outtype i2_s --outfile model.gguf`.
//!
//! Ctrl-C cancels cleanly: the converter stops at the next tensor and removes its temporary
//! file, so nothing is left at (or next to) the output path.

use crate::error::{CliError, CliResult};
use bitnet_convert::{ConvertArgs, ConvertOptions, StderrProgress};
use clap::Args;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ConvertCommand {
    #[command(flatten)]
    pub args: ConvertArgs,
}

pub fn run(cmd: ConvertCommand) -> CliResult {
    let options = ConvertOptions::from(cmd.args);
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| CliError::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;
    let summary = bitnet_convert::convert(&options, &StderrProgress::with_cancel_flag(cancel))?;
    println!("{summary}");
    Ok(())
}
