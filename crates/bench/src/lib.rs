//! `vgpu bench`: one command on the GPU host that measures native CUDA and vgpu in the same
//! run and reports the ratios.
//!
//! The parent ([`parent`]) starts a `vgpu serve` of its own (or uses the given servers) and
//! spawns one measuring child per column: native (NVIDIA's `libcuda.so.1` and
//! `libnvidia-ml.so.1` from the system), then vgpu over each transport (our libraries from
//! `dist/lib`, with `VGPU_SERVER` set and the optional `--wrap` prefix, e.g. `no-gpu.sh`, so
//! that nothing but vgpu can reach the GPU). A child ([`child`]) loads the libraries it is
//! given with the same [`abi::cuda::CudaLib`]/[`abi::nvml::NvmlLib`] structs, measures through
//! the driver API and NVML only, and prints one JSON object ([`model::ChildResult`]).
//! llama-bench runs ([`llama`]) are optional. [`report`] turns the results into rows, ratios,
//! a markdown table and the JSON file written to `bench/`.

pub mod child;
pub mod echo;
pub mod llama;
pub mod model;
pub mod parent;
pub mod report;
pub mod stats;
pub mod time;

use std::path::PathBuf;

/// The `vgpu bench` command line.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Small sizes and few iterations (seconds; for tests and smoke runs).
    #[arg(long)]
    pub quick: bool,
    /// Backend of the server this command starts: `cuda`, or `sim` (no GPU needed: kernels
    /// cannot run and there is no native column).
    #[arg(long, default_value = "cuda")]
    pub backend: String,
    /// Use this running server for the unix column (unix:/path) instead of starting one.
    #[arg(long)]
    pub server: Option<String>,
    /// Use this running server for the tcp column (tcp://host:port) instead of starting one.
    #[arg(long)]
    pub tcp_server: Option<String>,
    /// Token file for --server/--tcp-server (default: VGPU_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Directory holding our libcuda.so.1 and libnvidia-ml.so.1 (default: ../lib next to this
    /// executable, as laid out by scripts/dist.sh).
    #[arg(long)]
    pub dist_lib: Option<PathBuf>,
    /// Command prefix for every vgpu-side process, split at spaces (e.g. "tools/no-gpu.sh").
    #[arg(long)]
    pub wrap: Option<String>,
    /// Leave out the native column.
    #[arg(long)]
    pub no_native: bool,
    /// Directory holding llama-bench (and its libraries): adds llama.cpp rows.
    #[arg(long)]
    pub llama_bin: Option<PathBuf>,
    /// GGUF models for the llama rows, comma-separated (e.g. q8.gguf,f16.gguf).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<PathBuf>,
    /// Repetitions of each llama-bench test (-r).
    #[arg(long, default_value_t = 3)]
    pub llama_reps: u32,
    /// llama-bench runs per model and column, taken in turns (native, unix, tcp, shm,
    /// native, ...) with every sample pooled: one run's speed differs from the next by a
    /// few percent, natively too, more than the differences being measured. On the H100
    /// hosts each process lands in one of two bands about 6% apart (49k or 52-54k t/s for
    /// the 1B Q8 prompt test), so a column needs several runs for its share of each band
    /// to even out.
    #[arg(long, default_value_t = 8)]
    pub llama_rounds: u32,
    /// llama-bench processes started together in each column's run: a GPU shared by that
    /// many clients. The llama rows then give their summed speed (`pp512 ×4 at once, summed`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub clients: u32,
    /// With --clients N: a mixed load. The first client processes prompts (pp512,
    /// --mixed-prompt-reps times, from --mixed-delay seconds after the others start) while
    /// the other N-1 decode (tg128, --llama-reps times, which must outlast the prompts: a
    /// note says when they did not). Rows: the prompt's median beside the decoders, and the
    /// decoders' summed speed.
    #[arg(long, requires = "llama_bin")]
    pub mixed: bool,
    /// --mixed: the prompt client's repetitions.
    #[arg(long, default_value_t = 60)]
    pub mixed_prompt_reps: u32,
    /// --mixed: seconds the prompt client starts after the decoders (their model loaded).
    #[arg(long, default_value_t = 2.0)]
    pub mixed_delay: f64,
    /// Where the dated .md/.json results and README.md go.
    #[arg(long, default_value = "bench")]
    pub out: PathBuf,
    /// Print only; write no files.
    #[arg(long)]
    pub no_write: bool,
    /// Measure nothing: rewrite the results section of README.md in --out from the result
    /// files there (the newest named as the latest).
    #[arg(long)]
    pub reindex: bool,
    /// Seconds each measuring process (child, llama-bench run) may take.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Print JSON instead of markdown (with --child: the child's one-line result).
    #[arg(long)]
    pub json: bool,
    /// Internal: measure in this process with the given libraries and print the result.
    #[arg(long, hide = true)]
    pub child: bool,
    /// Internal (--child): the libcuda.so.1 to load.
    #[arg(long, hide = true, default_value = "libcuda.so.1")]
    pub lib: String,
    /// Internal (--child): the libnvidia-ml.so.1 to load.
    #[arg(long, hide = true, default_value = "libnvidia-ml.so.1")]
    pub nvml: String,
}

/// Run `vgpu bench` (the parent, or with `--child` one measuring process).
pub fn main(args: Args) -> Result<(), String> {
    if args.child {
        let r = child::measure(&child::Plan::new(args.quick), &args.lib, &args.nvml).map_err(|e| e.to_string())?;
        let s = if args.json { serde_json::to_string(&r) } else { serde_json::to_string_pretty(&r) };
        println!("{}", s.map_err(|e| e.to_string())?);
        Ok(())
    } else if args.reindex {
        parent::reindex(&args.out, None)
    } else {
        parent::run(&args)
    }
}
