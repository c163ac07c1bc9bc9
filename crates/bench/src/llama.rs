//! llama-bench runs: the command line, and its `-o json` output.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// One test of one llama-bench run (`pp512`, `tg128`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LlamaTest {
    /// `model_filename` as llama-bench reports it.
    pub model: String,
    /// `pp512`, `tg128` (as llama-bench's markdown names them).
    pub test: String,
    /// Tokens per second, mean over the repetitions.
    pub avg_ts: f64,
    pub stddev_ts: f64,
    /// Tokens per second, median of the repetitions (the mean when llama-bench gave no
    /// samples). Reported: a prompt-processing run now and then takes much longer than
    /// the others, natively too, and moves the mean by more than the difference measured.
    #[serde(default)]
    pub median_ts: f64,
    /// Every sample (tokens/s), of every run pooled (see [`pool`]).
    #[serde(default)]
    pub samples: Vec<f64>,
    /// Each run's own median, in the order the runs were taken: the spread between runs
    /// (each llama-bench process can land in a faster or slower band) is the noise a
    /// pooled median carries.
    #[serde(default)]
    pub run_medians: Vec<f64>,
}

impl LlamaTest {
    /// The samples without each run's first repetition, where the runs took the same number
    /// of two or more (`None` otherwise). A llama-bench process's first prompt repetition
    /// runs at about two thirds of the others' speed, natively too (its warm-up run does not
    /// cover it), so the share of first repetitions in the pool moves the pooled median.
    pub fn later_samples(&self) -> Option<Vec<f64>> {
        let runs = self.run_medians.len();
        let per = self.samples.len().checked_div(runs)?;
        if per < 2 || per * runs != self.samples.len() {
            return None;
        }
        Some(self.samples.chunks(per).flat_map(|run| run[1..].iter().copied()).collect())
    }
}

/// Add the tests of another run of the same model in the same column to `into`: samples
/// pooled, mean, deviation and median taken over all of them.
pub fn pool(into: &mut Vec<LlamaTest>, more: Vec<LlamaTest>) {
    for t in more {
        let Some(have) = into.iter_mut().find(|h| h.model == t.model && h.test == t.test) else {
            into.push(t);
            continue;
        };
        if have.samples.is_empty() || t.samples.is_empty() {
            // Runs without samples: keep the first run's numbers.
            continue;
        }
        have.samples.extend_from_slice(&t.samples);
        have.run_medians.extend_from_slice(&t.run_medians);
        let n = have.samples.len() as f64;
        have.avg_ts = have.samples.iter().sum::<f64>() / n;
        let var = have.samples.iter().map(|x| (x - have.avg_ts).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        have.stddev_ts = var.sqrt();
        have.median_ts = crate::stats::p50(&have.samples);
    }
}

/// The tests of `runs`, llama-bench processes that ran at once on one GPU, as one run whose
/// every test gives their summed speed: the tokens per second the GPU served them all (each
/// process's median, summed; likewise the means, the deviations as of independent runs).
/// Named `pp512 ×4 at once, summed`, so that such rows are not mistaken for one process's.
pub fn summed(runs: &[Vec<LlamaTest>]) -> Result<Vec<LlamaTest>, String> {
    summed_as(runs, "at once")
}

/// [`summed`], the tests named `tg128 ×N {how}, summed`.
fn summed_as(runs: &[Vec<LlamaTest>], how: &str) -> Result<Vec<LlamaTest>, String> {
    let first = runs.first().ok_or("no llama-bench run to sum")?;
    let n = runs.len();
    first
        .iter()
        .map(|t| {
            let same: Vec<&LlamaTest> = runs
                .iter()
                .map(|r| r.iter().find(|o| o.model == t.model && o.test == t.test))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("{} {}: not in every run of those at once", t.model, t.test))?;
            let median_ts = same.iter().map(|o| o.median_ts).sum();
            Ok(LlamaTest {
                model: t.model.clone(),
                test: format!("{} ×{n} {how}, summed", t.test),
                avg_ts: same.iter().map(|o| o.avg_ts).sum(),
                stddev_ts: same.iter().map(|o| o.stddev_ts.powi(2)).sum::<f64>().sqrt(),
                median_ts,
                samples: vec![median_ts],
                run_medians: vec![median_ts],
            })
        })
        .collect()
}

/// A mixed load as one run: the prompt client's tests (`pp512 beside 3 decoding`) and the
/// decoders' summed (`tg128 ×3 beside a prompt, summed`).
pub fn mixed(prompt: Vec<LlamaTest>, decoders: &[Vec<LlamaTest>]) -> Result<Vec<LlamaTest>, String> {
    let n = decoders.len();
    let mut tests: Vec<LlamaTest> =
        prompt.into_iter().map(|t| LlamaTest { test: format!("{} beside {n} decoding", t.test), ..t }).collect();
    tests.extend(summed_as(decoders, "beside a prompt")?);
    Ok(tests)
}

/// The arguments of a mixed load's runs (`-p 512 -n 0` for the prompt client, `-p 0 -n 128`
/// for a decoder), otherwise as [`args`].
pub fn mixed_args(model: &Path, prompt: bool, reps: u32) -> Vec<String> {
    let (p, n) = if prompt { ("512", "0") } else { ("0", "128") };
    tests_args(model, p, n, reps)
}

/// The arguments of one llama-bench run: `-m M -p 512,4096 -n 128 -b 512 -ub 512 -ngl 99
/// -r REPS -o json`. pp4096 in batches of 512 (Ollama's default batch) is a long prompt as
/// applications send it: eight batches, each waiting for the last one's logits.
pub fn args(model: &Path, reps: u32) -> Vec<String> {
    tests_args(model, "512,4096", "128", reps)
}

/// `-m M -p PROMPTS -n GENERATED -b 512 -ub 512 -ngl 99 -r REPS -o json`.
fn tests_args(model: &Path, prompts: &str, generated: &str, reps: u32) -> Vec<String> {
    let mut a = vec!["-m".to_string(), model.display().to_string()];
    for s in ["-p", prompts, "-n", generated, "-b", "512", "-ub", "512", "-ngl", "99", "-r"] {
        a.push(s.to_string());
    }
    a.push(reps.to_string());
    a.push("-o".to_string());
    a.push("json".to_string());
    a
}

/// The name llama-bench gives a test: `pp512`, `tg128`, `pp512+tg128`, with ` @ d<depth>`.
pub fn test_name(n_prompt: u64, n_gen: u64, n_depth: u64) -> String {
    let mut s = match (n_prompt, n_gen) {
        (p, 0) => format!("pp{p}"),
        (0, g) => format!("tg{g}"),
        (p, g) => format!("pp{p}+tg{g}"),
    };
    if n_depth > 0 {
        s.push_str(&format!(" @ d{n_depth}"));
    }
    s
}

/// Parse llama-bench's `-o json` output: a list of objects, one per test, with
/// `model_filename`, `n_prompt`, `n_gen`, `n_depth`, `avg_ts`, `stddev_ts` among others.
/// Text before the list (a stray log line on stdout) is skipped.
pub fn parse(out: &str) -> Result<Vec<LlamaTest>, String> {
    let start = out.find('[').ok_or("no JSON list in llama-bench output")?;
    let v: Value = serde_json::from_str(out[start..].trim_end()).map_err(|e| format!("llama-bench JSON: {e}"))?;
    let list = v.as_array().ok_or("llama-bench JSON is not a list")?;
    let num = |o: &Value, k: &str| o.get(k).and_then(Value::as_f64);
    let int = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
    list.iter()
        .map(|o| {
            let avg_ts = num(o, "avg_ts").ok_or("llama-bench JSON: a test without avg_ts")?;
            let samples: Vec<f64> = o
                .get("samples_ts")
                .and_then(Value::as_array)
                .map_or(Vec::new(), |a| a.iter().filter_map(Value::as_f64).collect());
            let median_ts = if samples.is_empty() { avg_ts } else { crate::stats::p50(&samples) };
            Ok(LlamaTest {
                model: o.get("model_filename").and_then(Value::as_str).unwrap_or("?").to_string(),
                test: test_name(int(o, "n_prompt"), int(o, "n_gen"), int(o, "n_depth")),
                avg_ts,
                stddev_ts: num(o, "stddev_ts").unwrap_or(0.0),
                median_ts,
                samples,
                run_medians: vec![median_ts],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/llama-bench.json");

    #[test]
    fn parses_llama_bench_json() {
        let t = parse(FIXTURE).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].test, "pp512");
        assert_eq!(t[0].model, "/tmp/vgpu-work/q8.gguf");
        assert!((t[0].avg_ts - 45950.123).abs() < 1e-9);
        assert_eq!(t[0].median_ts, 45953.9, "the middle sample");
        assert_eq!(t[0].run_medians, vec![45953.9], "one run");
        assert!((t[0].stddev_ts - 70.5).abs() < 1e-9);
        assert_eq!(t[1].test, "tg128");
        assert!((t[1].avg_ts - 874.7).abs() < 1e-9);
    }

    #[test]
    fn skips_leading_noise_and_rejects_garbage() {
        let t = parse(&format!("ggml_cuda_init: found 1 CUDA devices\n{FIXTURE}")).unwrap();
        assert_eq!(t.len(), 2);
        assert!(parse("").is_err());
        assert!(parse("[ {\"n_prompt\": 512} ]").unwrap_err().contains("avg_ts"));
        assert!(parse("[ {").is_err());
        assert_eq!(parse("[\n]\n").unwrap(), vec![]);
    }

    #[test]
    fn runs_pool_their_samples() {
        let mut all = parse(FIXTURE).unwrap();
        let n = all[0].samples.len();
        assert!(n >= 3);
        let mut more = parse(FIXTURE).unwrap();
        for x in &mut more[0].samples {
            *x += 1000.0;
        }
        more[0].run_medians[0] += 1000.0;
        pool(&mut all, more);
        assert_eq!(all.len(), 2, "the same tests, not new ones");
        assert_eq!(all[0].samples.len(), 2 * n);
        let first = parse(FIXTURE).unwrap();
        assert!(all[0].median_ts > first[0].median_ts && all[0].median_ts < first[0].median_ts + 1000.0);
        assert!((all[0].avg_ts - (first[0].avg_ts + 500.0)).abs() < 1.0, "{}", all[0].avg_ts);
        assert!(all[0].stddev_ts > 400.0, "spread of both runs: {}", all[0].stddev_ts);
        assert_eq!(all[0].run_medians, vec![first[0].median_ts, first[0].median_ts + 1000.0], "one per run, in order");
    }

    #[test]
    fn runs_at_once_sum() {
        let one = parse(FIXTURE).unwrap();
        let mut other = one.clone();
        other[1].median_ts = 100.0;
        let sum = summed(&[one.clone(), other.clone(), one.clone()]).unwrap();
        assert_eq!(sum.len(), 2);
        assert_eq!(sum[0].test, "pp512 ×3 at once, summed");
        assert_eq!(sum[1].test, "tg128 ×3 at once, summed");
        assert!((sum[0].median_ts - 3.0 * one[0].median_ts).abs() < 1e-6);
        assert!((sum[1].median_ts - (2.0 * one[1].median_ts + 100.0)).abs() < 1e-6);
        assert_eq!(sum[1].samples, vec![sum[1].median_ts], "one sample a round: the sum");
        assert!((sum[0].stddev_ts - 3f64.sqrt() * one[0].stddev_ts).abs() < 1e-6);
        // Rounds pool as single runs do: the median of the rounds' sums.
        let mut pooled = sum.clone();
        pool(&mut pooled, summed(&[one.clone(), one.clone(), one.clone()]).unwrap());
        assert_eq!(pooled[0].run_medians.len(), 2);
        // A process that lacks a test the others ran makes the whole run unusable.
        other.pop();
        assert!(summed(&[one.clone(), other]).unwrap_err().contains("tg128"));
        assert!(summed(&[]).is_err());
    }

    #[test]
    fn mixed_loads_name_both_sides() {
        let one = parse(FIXTURE).unwrap();
        let prompt: Vec<LlamaTest> = one.iter().filter(|t| t.test == "pp512").cloned().collect();
        let dec: Vec<LlamaTest> = one.iter().filter(|t| t.test == "tg128").cloned().collect();
        let m = mixed(prompt, &[dec.clone(), dec.clone(), dec.clone()]).unwrap();
        let names: Vec<&str> = m.iter().map(|t| t.test.as_str()).collect();
        assert_eq!(names, ["pp512 beside 3 decoding", "tg128 ×3 beside a prompt, summed"]);
        assert_eq!(m[0].median_ts, one[0].median_ts, "the prompt's own median");
        assert!((m[1].median_ts - 3.0 * one[1].median_ts).abs() < 1e-6);
        assert!(mixed(vec![], &[]).is_err(), "no decoders");
        assert_eq!(
            mixed_args(Path::new("/m/q8.gguf"), true, 60).join(" "),
            "-m /m/q8.gguf -p 512 -n 0 -b 512 -ub 512 -ngl 99 -r 60 -o json"
        );
        assert_eq!(
            mixed_args(Path::new("/m/q8.gguf"), false, 8).join(" "),
            "-m /m/q8.gguf -p 0 -n 128 -b 512 -ub 512 -ngl 99 -r 8 -o json"
        );
    }

    #[test]
    fn test_names() {
        assert_eq!(test_name(512, 0, 0), "pp512");
        assert_eq!(test_name(0, 128, 0), "tg128");
        assert_eq!(test_name(512, 128, 0), "pp512+tg128");
        assert_eq!(test_name(0, 128, 4096), "tg128 @ d4096");
    }

    #[test]
    fn command_line() {
        assert_eq!(
            args(Path::new("/m/q8.gguf"), 3).join(" "),
            "-m /m/q8.gguf -p 512,4096 -n 128 -b 512 -ub 512 -ngl 99 -r 3 -o json"
        );
    }
}
