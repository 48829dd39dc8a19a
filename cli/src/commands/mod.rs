//! One module per subcommand (`serve` is larger and has its own folder).

pub mod bench;
pub mod bench_batched;
pub mod chat;
pub mod convert;
pub mod info;
pub mod perplexity;
pub mod run;
