//! Anomalies: buckets that deviate from a series' robust baseline.
//!
//! The baseline is the median of the series' bucket values over the
//! analysis's range; the spread is the median absolute deviation scaled to a
//! standard deviation (1.4826 · MAD), or, when more than half the values are
//! equal (MAD = 0), the mean absolute deviation scaled likewise
//! (1.2533 · MeanAD). A bucket is an anomaly when its value lies more than
//! `k` spreads from the median (`analytics.analysis.anomaly_k`, default 5):
//! severity `warning`, or `error` beyond `2k`. A series with fewer than
//! [`MIN_POINTS`] buckets, or no spread at all, has none.

/// Fewer buckets than this give no baseline.
pub const MIN_POINTS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub median: f64,
    /// One "standard deviation" of the robust estimate.
    pub spread: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// Index into the values.
    pub index: usize,
    pub value: f64,
    /// (value − median) / spread.
    pub score: f64,
    pub severe: bool,
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

pub fn baseline(values: &[f64]) -> Option<Baseline> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.len() < MIN_POINTS {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let m = median(&sorted);
    let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - m).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    let mad = median(&deviations);
    let spread = if mad > 0.0 {
        1.4826 * mad
    } else {
        1.2533 * deviations.iter().sum::<f64>() / deviations.len() as f64
    };
    (spread > 0.0).then_some(Baseline { median: m, spread })
}

/// The values more than `k` spreads from the median.
pub fn detect(values: &[f64], k: f64) -> (Option<Baseline>, Vec<Anomaly>) {
    let Some(b) = baseline(values) else {
        return (None, Vec::new());
    };
    let anomalies = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .filter_map(|(index, &value)| {
            let score = (value - b.median) / b.spread;
            (score.abs() > k).then_some(Anomaly {
                index,
                value,
                score,
                severe: score.abs() > 2.0 * k,
            })
        })
        .collect();
    (Some(b), anomalies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_in_noisy_data_is_found_and_nothing_else() {
        let mut values: Vec<f64> = (0..100).map(|i| 50.0 + (i % 7) as f64 - 3.0).collect();
        values[40] = 500.0;
        values[70] = 35.0; // low, but within 5 spreads? spread = 1.4826·2 ≈ 3: 15/3 = 5.06 > 5
        let (b, found) = detect(&values, 5.0);
        let b = b.unwrap();
        assert_eq!(b.median, 50.0);
        let indexes: Vec<usize> = found.iter().map(|a| a.index).collect();
        assert_eq!(indexes, [40, 70]);
        assert!(found[0].severe && found[0].score > 0.0);
        assert!(!found[1].severe && found[1].score < 0.0);
    }

    #[test]
    fn a_flat_series_uses_the_mean_deviation_and_too_few_points_give_none() {
        let mut flat = vec![10.0; 20];
        flat[5] = 30.0;
        let (b, found) = detect(&flat, 5.0);
        assert!(b.unwrap().spread > 0.0);
        assert_eq!(found.iter().map(|a| a.index).collect::<Vec<_>>(), [5]);
        assert_eq!(detect(&[1.0, 100.0, 1.0], 5.0), (None, Vec::new()));
        assert_eq!(detect(&[7.0; 30], 5.0), (None, Vec::new()));
    }
}
