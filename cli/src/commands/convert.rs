//! `bitnet convert <HF folder or repo id> --outtype i2_s --outfile model.gguf`.

use crate::error::CliResult;
use bitnet_convert::{ConvertArgs, ConvertOptions, StderrProgress};
use clap::Args;

#[derive(Args, Debug)]
pub struct ConvertCommand {
    #[command(flatten)]
    pub args: ConvertArgs,
}

pub fn run(cmd: ConvertCommand) -> CliResult {
    let options = ConvertOptions::from(cmd.args);
    let summary = bitnet_convert::convert(&options, &StderrProgress::new())?;
    println!("{summary}");
    Ok(())
}
