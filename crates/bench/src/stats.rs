//! Small statistics over samples (microseconds, seconds): mean, percentiles, best.

/// Arithmetic mean; 0 for no samples.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// The `p`-th percentile (0..=100) by nearest rank on the sorted samples; 0 for no samples.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0 * v.len() as f64).ceil() as usize;
    v[rank.saturating_sub(1).min(v.len() - 1)]
}

/// The median (50th percentile by nearest rank).
pub fn p50(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

/// The smallest sample; 0 for no samples.
pub fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().min_by(f64::total_cmp).unwrap_or(0.0)
}

/// Bytes moved in `secs` seconds, in GB/s (10^9 bytes per second); 0 when no time passed.
pub fn gbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 { bytes as f64 / secs / 1e9 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_empty() {
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(mean(&[1.0, 2.0, 3.0, 6.0]), 3.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let xs = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(p50(&xs), 3.0);
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert_eq!(percentile(&xs, 100.0), 5.0);
        assert_eq!(percentile(&xs, 99.0), 5.0);
        assert_eq!(percentile(&xs, 20.0), 1.0);
        assert_eq!(percentile(&xs, 21.0), 2.0);
        // Even count: the lower middle.
        assert_eq!(p50(&[4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(p50(&[7.0]), 7.0);
        assert_eq!(p50(&[]), 0.0);
    }

    #[test]
    fn best_and_bandwidth() {
        assert_eq!(min(&[3.0, 0.5, 2.0]), 0.5);
        assert_eq!(min(&[]), 0.0);
        assert!((gbps(1 << 30, 0.1) - 10.737_418_24).abs() < 1e-9);
        assert_eq!(gbps(4096, 0.0), 0.0);
    }
}
