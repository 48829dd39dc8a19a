//! One Candle app, unchanged on CPU and GPU: only the `Device` differs.
//!
//! ```sh
//! cargo run --release -p bitnet-candle --example device -- model.gguf cpu
//! cargo run --release -p bitnet-candle --features cuda --example device -- model.gguf cuda
//! ```
//! It runs a ternary `BitLinear` on a tensor of that device, then loads the model there and
//! generates greedily.

use std::ops::ControlFlow;

use bitnet_candle::{
    parse_device, BitLinear, Device, GenerationParams, KvDtype, LoadOptions, Model, Session,
};
use candle_core::{Module, Tensor};

fn run(path: &str, device: Device) -> bitnet_candle::Result<()> {
    // A ternary layer inside any Candle computation, on the chosen device.
    let w = Tensor::randn(0f32, 1.0, (256, 128), &Device::Cpu)?;
    let layer = BitLinear::from_float(&w)?;
    let x = Tensor::randn(0f32, 1.0, (4, 128), &device)?;
    let y = layer.forward(&x)?;
    println!(
        "BitLinear on {:?}: {:?} -> {:?}",
        device.location(),
        x.dims(),
        y.dims()
    );

    // A whole model: the same call on CPU and GPU.
    let model = Model::load(
        path,
        &LoadOptions {
            device,
            ..LoadOptions::default()
        },
    )?;
    let mut session = Session::new(&model, 512, KvDtype::F32)?;
    let prompt = model.tokenizer().encode("The capital of France is", true)?;
    let params = GenerationParams {
        max_new_tokens: 32,
        ..GenerationParams::default()
    };
    let out = session.generate(&prompt, &params, |piece| {
        print!("{piece}");
        ControlFlow::Continue(())
    })?;
    println!(
        "\n{} tokens in {:.2} s on {:?}",
        out.tokens.len(),
        out.gen_time.as_secs_f64(),
        model.device().location()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: device MODEL.gguf [cpu|cuda|cuda:N]");
        std::process::exit(2);
    };
    let result = parse_device(args.get(1).map_or("cpu", String::as_str)).and_then(|d| run(path, d));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
