//! `vgpu bench` end to end against the sim backend: no GPU, so no native column and no
//! kernels, but round trips, copies and NVML through every transport.

mod common;
use common::*;
use std::process::Command;

fn cells<'a>(md: &'a str, metric: &str) -> Vec<&'a str> {
    let line = md
        .lines()
        .find(|l| l.starts_with(&format!("| {metric} |")))
        .unwrap_or_else(|| panic!("no row {metric:?} in:\n{md}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn bench_on_sim_reports_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let out = tmp.path().join("results");
    let o = Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args(["bench", "--backend", "sim", "--quick", "--timeout", "120", "--dist-lib"])
        .arg(&lib)
        .arg("--out")
        .arg(&out)
        .env("VGPU_LOG", "warn")
        .env_remove("VGPU_SERVER")
        .output()
        .expect("run vgpu bench");
    let md = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stdout:\n{md}\nstderr:\n{err}");
    assert!(md.starts_with("# vgpu bench: NVIDIA H100 80GB HBM3 on "), "{md}");
    assert!(
        md.contains(
            "| metric | unit | native | unix | tcp | shm | tcp+file | tls | unix ratio | tcp ratio | shm ratio | tcp+file ratio | tls ratio |"
        ),
        "{md}"
    );

    // Columns: metric, unit, native, unix, tcp, shm, tcp+file (TCP and a shared file), tls,
    // then the five ratios.
    for metric in [
        "synchronize an idle stream (vgpu answers it locally), mean",
        "synchronize an idle stream (vgpu answers it locally), p50",
        "copy H2D pageable 4 KiB",
        "copy D2H pageable 1 MiB",
        "copy H2D pinned 64 KiB",
        "copy D2H pinned 1 MiB",
        "NVML nvmlDeviceGetMemoryInfo (a server round trip through vgpu), mean",
    ] {
        let c = cells(&md, metric);
        assert_eq!(c.len(), 13, "{metric}: {c:?}");
        assert_eq!(c[2], "n/a", "no native column on sim: {c:?}");
        for v in [c[3], c[4], c[5], c[6], c[7]] {
            assert!(v.parse::<f64>().is_ok_and(|v| v > 0.0), "{metric}: {c:?}");
        }
        assert_eq!(&c[8..], ["n/a", "n/a", "n/a", "n/a", "n/a"], "no ratios without native: {c:?}");
    }
    let launch = cells(&md, "empty kernel launch: submit cost per launch");
    assert_eq!(launch[3], "n/a (kernels unsupported)", "{launch:?}");
    assert_eq!(launch[4], "n/a (kernels unsupported)", "{launch:?}");
    assert_eq!(launch[5], "n/a (kernels unsupported)", "{launch:?}");
    assert_eq!(launch[6], "n/a (kernels unsupported)", "{launch:?}");
    assert_eq!(launch[7], "n/a (kernels unsupported)", "{launch:?}");
    assert!(md.contains("- unix: no kernel launches ("), "{md}");
    assert!(md.contains("- shm: no kernel launches ("), "{md}");

    // The dated table, its JSON and the index.
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let table = names.iter().find(|n| n.ends_with("-sim-quick.md")).unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(std::fs::read_to_string(out.join(table)).unwrap(), md);
    let json = std::fs::read_to_string(out.join(table.replace(".md", ".json"))).unwrap();
    let report = bench::report::Report::from_json(&json).unwrap();
    assert_eq!(report.columns, ["native", "unix", "tcp", "shm", "tcp+file", "tls"]);
    assert_eq!(report.meta.backend, "sim");
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains(&format!("Latest: [{table}]({table})")), "{readme}");
}

#[test]
fn bench_child_reports_a_missing_library_cleanly() {
    let o = Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args([
            "bench",
            "--child",
            "--json",
            "--lib",
            "/nonexistent/libcuda.so.1",
            "--nvml",
            "/nonexistent/libnvidia-ml.so.1",
        ])
        .output()
        .expect("run vgpu bench --child");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot load /nonexistent/libcuda.so.1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A sim `vgpu bench --quick` of three llama-bench clients at once, `extra` arguments added,
/// with `script` standing in for llama-bench; its markdown.
fn bench_three_clients(tmp: &std::path::Path, script: &str, extra: &[&str]) -> String {
    let lib = lib_dir(tmp);
    let bin = tmp.join("llama");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("llama-bench");
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let model = tmp.join("q8.gguf");
    std::fs::write(&model, b"").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args(["bench", "--backend", "sim", "--quick", "--no-write", "--timeout", "120", "--clients", "3"])
        .args(["--llama-rounds", "1", "--llama-reps", "1"])
        .args(extra)
        .arg("--dist-lib")
        .arg(&lib)
        .arg("--llama-bin")
        .arg(&bin)
        .arg("--models")
        .arg(&model)
        .env("VGPU_LOG", "warn")
        .env_remove("VGPU_SERVER")
        .output()
        .expect("run vgpu bench");
    let md = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "stdout:\n{md}\nstderr:\n{}", String::from_utf8_lossy(&o.stderr));
    md
}

/// `--clients N`: each column's llama-bench run is N processes started together, and its rows
/// give their summed speed. A stand-in llama-bench logs when it starts and ends (each lasts
/// long enough for the others to start meanwhile) and prints a recorded llama-bench result.
#[test]
fn bench_sums_llama_runs_started_together() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/bench/tests/fixtures/llama-bench.json");
    let log = tmp.path().join("runs.log");
    let script =
        format!("#!/bin/sh\necho start >> {log}\nsleep 1.5\necho end >> {log}\ncat {fixture}\n", log = log.display());
    let md = bench_three_clients(tmp.path(), &script, &[]);
    let one = bench::llama::parse(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    for (i, test) in ["pp512", "tg128"].iter().enumerate() {
        let c = cells(&md, &format!("llama-bench q8.gguf {test} ×3 at once, summed, median"));
        // sim has no native column; unix, tcp, shm, tcp+file and tls each ran three at once.
        for v in &c[3..8] {
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("{test}: {c:?}"));
            assert!((v / (3.0 * one[i].median_ts) - 1.0).abs() < 1e-3, "{test}: {c:?}");
        }
    }
    assert!(md.contains("- llama-bench rows: 3 processes started together in each column's run"), "{md}");
    let cores = cells(&md, "llama-bench q8.gguf: cores busy while it ran, median");
    for v in &cores[3..8] {
        assert!(v.parse::<f64>().is_ok_and(|v| (0.0..=4096.0).contains(&v)), "{cores:?}");
    }
    // Five columns of three runs, each column's three started before any of them ended.
    let lines = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 30, "{lines:?}");
    for column in lines.chunks(6) {
        assert_eq!(column, ["start", "start", "start", "end", "end", "end"], "{lines:?}");
    }
}

/// `--mixed`: one client prompting while the others decode. A stand-in llama-bench prints a
/// recorded prompt result or decode result as its `-p` asks, and logs when it starts and
/// ends; the prompt client, started `--mixed-delay` after the decoders, outlasts them here,
/// which a note must say.
#[test]
fn bench_mixes_a_prompt_with_decoders() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/bench/tests/fixtures/llama-bench.json");
    let recorded: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    for (name, n_prompt) in [("pp.json", 512), ("tg.json", 0)] {
        let one: Vec<_> = recorded.iter().filter(|t| t["n_prompt"] == n_prompt).cloned().collect();
        std::fs::write(tmp.path().join(name), serde_json::to_string(&one).unwrap()).unwrap();
    }
    let log = tmp.path().join("runs.log");
    // llama-bench -m M -p P -n N ...: $4 is the prompt length.
    let script = format!(
        "#!/bin/sh\necho start $4 >> {log}\nsleep 1\necho end $4 >> {log}\n\
         if [ $4 = 512 ]; then cat {d}/pp.json; else cat {d}/tg.json; fi\n",
        log = log.display(),
        d = tmp.path().display()
    );
    let md = bench_three_clients(tmp.path(), &script, &["--mixed", "--mixed-delay", "0.5"]);
    let one = bench::llama::parse(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    for (metric, want) in [
        ("pp512 beside 2 decoding, median", one[0].median_ts),
        ("tg128 ×2 beside a prompt, summed, median", 2.0 * one[1].median_ts),
    ] {
        let c = cells(&md, &format!("llama-bench q8.gguf {metric}"));
        for v in &c[3..8] {
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("{metric}: {c:?}"));
            assert!((v / want - 1.0).abs() < 1e-3, "{metric}: {c:?}");
        }
    }
    assert!(md.contains("- llama-bench rows, mixed load: one process prompting"), "{md}");
    assert!(md.contains("unix") && md.contains("the prompt client outlasted a decoder in 1 of its runs"), "{md}");
    // Each column: both decoders start, then the prompt client, which ends last.
    let lines = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 30, "{lines:?}");
    for column in lines.chunks(6) {
        assert_eq!(column, ["start 0", "start 0", "start 512", "end 0", "end 0", "end 512"], "{lines:?}");
    }
    // Refused without clients to mix.
    let o = Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args(["bench", "--backend", "sim", "--no-write", "--mixed", "--llama-bin"])
        .arg(tmp.path().join("llama"))
        .arg("--models")
        .arg(tmp.path().join("q8.gguf"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--mixed needs --clients 2"), "{o:?}");
}
