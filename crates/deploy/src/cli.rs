//! The `vgpu install|uninstall|env|doctor` subcommands (flattened into the `vgpu` command).

use crate::doctor::{self, Options, ProbeMode};
use crate::fsops::Action;
use crate::root::Root;
use crate::{config, env, ollama, probe, system};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Put vgpu's libraries where an application loads them (originals kept).
    Install {
        #[command(subcommand)]
        what: InstallWhat,
    },
    /// Undo `vgpu install`, restoring the original files byte for byte.
    Uninstall {
        #[command(subcommand)]
        what: UninstallWhat,
    },
    /// Print the shell lines that point programs at vgpu's libraries (LD_LIBRARY_PATH mode).
    Env {
        /// vgpu's library directory (default: ../lib next to this vgpu binary).
        #[arg(long)]
        lib_dir: Option<PathBuf>,
    },
    /// Find out why an application does not see the GPU: one report, a fix for each problem.
    Doctor {
        /// The findings as JSON.
        #[arg(long)]
        json: bool,
        /// Ollama's lib/ollama directory (default: found from PATH, /usr/local/lib/ollama, /usr/lib/ollama).
        #[arg(long)]
        ollama_dir: Option<PathBuf>,
        /// vgpu's library directory, to compare builds (default: ../lib next to this binary).
        #[arg(long)]
        lib_dir: Option<PathBuf>,
        #[arg(long, hide = true)]
        probe_nvml: Option<PathBuf>,
        #[arg(long, hide = true)]
        probe_cuda: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum InstallWhat {
    /// Into Ollama's lib/ollama/cuda_vNN folders (originals kept in lib/ollama/.vgpu-backup).
    Ollama {
        /// Ollama's lib/ollama directory (default: found from PATH and the usual places).
        #[arg(long)]
        ollama_dir: Option<PathBuf>,
        /// vgpu's library directory, e.g. dist/lib (default: ../lib next to this binary).
        #[arg(long)]
        lib_dir: Option<PathBuf>,
    },
    /// libcuda.so.1 and libnvidia-ml.so.1 for every program on this machine (runs ldconfig).
    System {
        /// Install under this root instead of / (ldconfig is then not run).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long)]
        lib_dir: Option<PathBuf>,
        /// Even on a machine with an NVIDIA GPU of its own (breaks `vgpu serve` there).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UninstallWhat {
    /// Restore Ollama's lib/ollama as it was.
    Ollama {
        #[arg(long)]
        ollama_dir: Option<PathBuf>,
    },
    /// Restore the system's libcuda.so.1 and libnvidia-ml.so.1.
    System {
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

/// `../lib` next to this binary, when it holds vgpu's libraries (the dist layout).
pub fn default_lib_dir() -> Option<PathBuf> {
    let exe = std::fs::canonicalize(std::env::current_exe().ok()?).ok()?;
    let lib = exe.parent()?.parent()?.join("lib");
    lib.join("libcuda.so.1").exists().then_some(lib)
}

fn lib_dir_or_err(given: Option<PathBuf>) -> Result<PathBuf, String> {
    given
        .or_else(default_lib_dir)
        .ok_or_else(|| "where are vgpu's libraries? pass --lib-dir (the dist/lib of a vgpu build)".to_string())
}

fn ollama_dir_or_err(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(d) = given {
        return Ok(d);
    }
    let path = std::env::var("PATH").ok();
    ollama::find(&Root::system(), path.as_deref()).ok_or_else(|| {
        let c: Vec<String> =
            ollama::candidates(&Root::system(), path.as_deref()).iter().map(|p| p.display().to_string()).collect();
        format!("no Ollama install found (looked in {}): pass --ollama-dir <prefix>/lib/ollama", c.join(", "))
    })
}

fn print_actions(actions: &[Action]) {
    for a in actions {
        println!("vgpu: {a}");
    }
}

fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpu: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Install { what: InstallWhat::Ollama { ollama_dir, lib_dir } } => report((|| {
            let dir = ollama_dir_or_err(ollama_dir)?;
            let lib = lib_dir_or_err(lib_dir)?;
            let (actions, skipped) = ollama::install(&dir, &lib)?;
            print_actions(&actions);
            for s in skipped {
                println!("vgpu: skipped {s}");
            }
            println!("vgpu: installed into {} (originals in {}/{})", dir.display(), dir.display(), ollama::BACKUP_DIR);
            println!(
                "vgpu: restart Ollama so it discovers the GPU again (sudo systemctl restart ollama); check with `vgpu doctor`"
            );
            Ok(())
        })()),
        Command::Install { what: InstallWhat::System { root, lib_dir, force } } => report((|| {
            let lib = lib_dir_or_err(lib_dir)?;
            let actions = system::install(&Root::new(root), &lib, force)?;
            print_actions(&actions);
            if actions.iter().any(|a| a.what == "read-only") {
                println!(
                    "vgpu: read-only copies were left as they are; `vgpu doctor` says whether they still come first"
                );
            }
            println!("vgpu: installed libcuda.so.1 and libnvidia-ml.so.1 (originals in {})", system::STATE_DIR);
            Ok(())
        })()),
        Command::Uninstall { what: UninstallWhat::Ollama { ollama_dir } } => report((|| {
            let dir = ollama_dir_or_err(ollama_dir)?;
            let actions = ollama::uninstall(&dir)?;
            if actions.is_empty() {
                println!("vgpu: nothing to undo in {}", dir.display());
            }
            print_actions(&actions);
            Ok(())
        })()),
        Command::Uninstall { what: UninstallWhat::System { root } } => report((|| {
            let actions = system::uninstall(&Root::new(root))?;
            if actions.is_empty() {
                println!("vgpu: nothing to undo");
            }
            print_actions(&actions);
            Ok(())
        })()),
        Command::Env { lib_dir } => report((|| {
            let lib = lib_dir_or_err(lib_dir)?;
            let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
            let cfg = config::resolve(&config::process_env(), &Root::system());
            print!("{}", env::lines(&lib, &cfg));
            Ok(())
        })()),
        Command::Doctor { probe_nvml, probe_cuda, .. } if probe_nvml.is_some() || probe_cuda.is_some() => {
            let out = probe::run_in_process(probe_nvml.as_deref(), probe_cuda.as_deref());
            println!("{}", serde_json::to_string(&out).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Doctor { json, ollama_dir, lib_dir, .. } => {
            let mut o = Options::system();
            o.ollama_dir = ollama_dir;
            o.lib_dir = lib_dir.or_else(default_lib_dir);
            o.probe = match std::env::current_exe() {
                Ok(exe) => ProbeMode::Child(exe),
                Err(_) => ProbeMode::InProcess,
            };
            let r = doctor::run(&o);
            if json {
                println!("{}", r.json());
            } else {
                print!("{}", r.text());
            }
            if r.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
    }
}
