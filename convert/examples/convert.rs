//! `cargo run -p bitnet-convert --example convert -- <folder or repo id> [--outtype ...]`:
//! the library behind `bitnet convert`, for development and peak-memory measurements.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: bitnet_convert::ConvertArgs,
}

fn main() {
    let cli = Cli::parse();
    let opts = bitnet_convert::ConvertOptions::from(cli.args);
    match bitnet_convert::convert(&opts, &bitnet_convert::StderrProgress::new()) {
        Ok(summary) => println!("{summary}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
