//! With the `cuda` feature, compiles `src/op/kernels/bitnet.cu` to PTX with nvcc (found through
//! `NVCC`, else `CUDA_HOME/bin`, else `PATH`; `tests/cuda/setup.sh` prepares one), for the
//! compute capability in `CUDA_COMPUTE_CAP` (default 90, the H100/H200). Without the feature it
//! does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/op/kernels/bitnet.cu");
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP", "NVCC_CCBIN"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bitnet.ptx");
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("bin/nvcc")))
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let mut cmd = Command::new(&nvcc);
    cmd.args(["--ptx", "-O3", "-std=c++17"])
        // Bit-exact float results against the CPU reference: no contracted multiply-adds.
        .arg("-fmad=false")
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg("src/op/kernels/bitnet.cu");
    if let Some(ccbin) = std::env::var_os("NVCC_CCBIN") {
        cmd.arg("-ccbin").arg(ccbin);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "the `cuda` feature needs nvcc ({}: {e}); run tests/cuda/setup.sh and source the file it prints",
            nvcc.display()
        )
    });
    assert!(
        status.success(),
        "nvcc failed on src/op/kernels/bitnet.cu ({status})"
    );
}
