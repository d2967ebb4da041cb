//! What a bucket holds: count, sum, min, max exactly, and a DDSketch for
//! percentiles. The same state is built from raw events and merged from
//! rollups, so both paths answer alike.
//!
//! Percentiles: `pXX` is the value at rank ⌊q·(n−1)⌋ of the bucket's sorted
//! values, to within a relative error of 1 % (DDSketch, `sketches-ddsketch`,
//! relative accuracy 0.01), as long as the bucket's values of each sign lie
//! within a factor of [`MAX_SPAN`] of each other in magnitude (2,048 bins of
//! the sketch; its portable encoding, which the rollups store, cannot carry
//! more). Beyond that, the smallest magnitudes of that sign share one bin and
//! read as its upper bound, still between the bucket's min and max. Values
//! whose magnitude is below 1e-9 count as 0.

use sketches_ddsketch::{Config, DDSketch};

use crate::model::Aggregation;

/// The sketch's relative accuracy; documented in the API. These are the
/// crate's defaults (accuracy 0.01, 2048 bins, values below 1e-9 count as 0),
/// which is also what a decoded sketch gets: the portable encoding carries
/// only the accuracy.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// How far apart (as a ratio) a bucket's magnitudes of one sign may lie for
/// its percentiles to keep [`RELATIVE_ACCURACY`]: γ^2047, γ = 1.01 / 0.99.
pub const MAX_SPAN: f64 = 6.0e17;

fn sketch_config() -> Config {
    Config::defaults()
}

pub fn new_sketch() -> DDSketch {
    DDSketch::new(sketch_config())
}

/// The state of one bucket (of a series, or of a group of series).
#[derive(Clone)]
pub struct Agg {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Only kept when a percentile is asked for.
    pub sketch: Option<DDSketch>,
}

impl Agg {
    pub fn new(with_sketch: bool) -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: with_sketch.then(new_sketch),
        }
    }

    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if let Some(sketch) = &mut self.sketch {
            sketch.add(value);
        }
    }

    /// Merges a rollup's figures (its sketch, when this state keeps one).
    pub fn merge_parts(&mut self, count: u64, sum: f64, min: f64, max: f64, sketch: Option<&DDSketch>) {
        self.count += count;
        self.sum += sum;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        if let (Some(mine), Some(theirs)) = (&mut self.sketch, sketch) {
            // Every sketch here has the same configuration, so this cannot fail.
            if let Err(error) = mine.merge(theirs) {
                tracing::error!(?error, "merging sketches of different configurations");
            }
        }
    }

    pub fn merge(&mut self, other: &Agg) {
        self.merge_parts(other.count, other.sum, other.min, other.max, other.sketch.as_ref());
    }

    pub fn value(&self, aggregation: Aggregation) -> f64 {
        // A bin's representative may lie just outside the values seen (one
        // value of 1.5 reads back as 1.5068): clamping to the exact min and
        // max only ever brings the estimate closer.
        let quantile = |q: f64| {
            self.sketch
                .as_ref()
                .and_then(|s| s.quantile(q).ok().flatten())
                .map_or(f64::NAN, |v| v.clamp(self.min, self.max))
        };
        match aggregation {
            Aggregation::Count => self.count as f64,
            Aggregation::Sum => self.sum,
            Aggregation::Avg => self.sum / self.count as f64,
            Aggregation::Min => self.min,
            Aggregation::Max => self.max,
            Aggregation::P50 => quantile(0.5),
            Aggregation::P90 => quantile(0.9),
            Aggregation::P95 => quantile(0.95),
            Aggregation::P99 => quantile(0.99),
        }
    }
}

pub fn encode_sketch(sketch: &DDSketch) -> Vec<u8> {
    sketch.to_java_bytes()
}

pub fn decode_sketch(bytes: &[u8]) -> anyhow::Result<DDSketch> {
    DDSketch::from_java_bytes(bytes).map_err(|e| anyhow::anyhow!("unreadable sketch: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[(q * (values.len() - 1) as f64) as usize]
    }

    #[test]
    fn percentiles_stay_within_the_documented_error_through_encoding_and_merging() {
        let mut values: Vec<f64> = (0..5000).map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 40.0).collect();
        let (left, right) = values.split_at(1700);
        let mut a = Agg::new(true);
        left.iter().for_each(|v| a.add(*v));
        let mut b = Agg::new(true);
        right.iter().for_each(|v| b.add(*v));
        let decoded = decode_sketch(&encode_sketch(b.sketch.as_ref().unwrap())).unwrap();
        a.sketch.as_mut().unwrap().merge(&decoded).expect("same configuration");
        a.merge_parts(b.count, b.sum, b.min, b.max, None);
        assert_eq!(a.count, 5000);
        for (agg, q) in [
            (Aggregation::P50, 0.5),
            (Aggregation::P90, 0.9),
            (Aggregation::P95, 0.95),
            (Aggregation::P99, 0.99),
        ] {
            let want = exact(&mut values, q);
            let got = a.value(agg);
            assert!(
                (got - want).abs() <= want.abs() * RELATIVE_ACCURACY + 1e-9,
                "{agg:?}: {got} vs {want}"
            );
        }
        assert_eq!(a.value(Aggregation::Min), -40.0);
    }

    #[test]
    fn percentiles_keep_their_accuracy_across_the_documented_span_of_each_sign() {
        for sign in [1.0, -1.0] {
            // Seventeen and a half decades, from 1e-5 to 6e12, every tenth of one.
            let mut values: Vec<f64> = (0..=176)
                .map(|i| sign * 1e-5 * 10f64.powf(f64::from(i) / 10.0))
                .chain([sign * 1e-5 * MAX_SPAN])
                .collect();
            let mut agg = Agg::new(true);
            values.iter().for_each(|v| agg.add(*v));
            let decoded = decode_sketch(&encode_sketch(agg.sketch.as_ref().unwrap())).unwrap();
            let mut merged = Agg::new(true);
            merged.merge_parts(agg.count, agg.sum, agg.min, agg.max, Some(&decoded));
            for (aggregation, q) in [
                (Aggregation::P50, 0.5),
                (Aggregation::P90, 0.9),
                (Aggregation::P95, 0.95),
                (Aggregation::P99, 0.99),
            ] {
                let want = exact(&mut values, q);
                for (how, state) in [("fresh", &agg), ("stored and merged", &merged)] {
                    let got = state.value(aggregation);
                    assert!(
                        (got - want).abs() <= want.abs() * RELATIVE_ACCURACY,
                        "{how} {aggregation:?} of sign {sign}: {got} vs {want}"
                    );
                }
            }
        }
        // Past the span (the 1e-8 … 1e12), the smallest share a bin:
        // the answer stays between the min and the max, as documented.
        let mut wide = Agg::new(true);
        [1e12, 1e-7, 1e-8].iter().for_each(|v| wide.add(*v));
        let p50 = wide.value(Aggregation::P50);
        assert!((1e-8..=1e12).contains(&p50) && p50 > 1e-7 * 1.01, "{p50}");
    }

    #[test]
    fn a_percentile_never_leaves_the_range_of_the_values() {
        let mut one = Agg::new(true);
        one.add(1.5);
        for agg in [Aggregation::P50, Aggregation::P99] {
            assert_eq!(one.value(agg), 1.5);
        }
    }
}
