use std::path::PathBuf;
use std::process::Command;

fn main() {
    gst_plugin_version_helper::info();
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_cuda_kernels();
    }
}

/// Compiles this crate's CUDA kernels to PTX (the `cuda` feature only), as candle-kernels does
/// for its own: with the `nvcc` on the PATH (or `NVCC`), for `CUDA_COMPUTE_CAP` (default 80, the
/// lowest with bf16 tensor-core instructions; the driver JIT-compiles the PTX for newer GPUs).
fn compile_cuda_kernels() {
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_string());
    let cap_num: u32 = cap
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("CUDA_COMPUTE_CAP must be a number such as 80, got {cap:?}"));
    if cap_num < 80 {
        panic!("CUDA_COMPUTE_CAP={cap}: the fused attention needs bf16 wmma, compute capability 80 or newer");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-changed=src/model/cuda/convert.cuh");
    for name in ["flash_attention", "block_ops"] {
        let src = format!("src/model/cuda/{name}.cu");
        println!("cargo:rerun-if-changed={src}");
        let ptx = out_dir.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=sm_{cap_num}"), "-o"])
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc} for {src}: {e} (is the CUDA toolkit on the PATH? scripts/cuda-toolkit.sh)"));
        if !status.success() {
            panic!("{nvcc} failed on {src} ({status})");
        }
    }
}
