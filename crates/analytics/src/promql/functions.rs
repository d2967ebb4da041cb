//! PromQL functions, as Prometheus 2.x computes them.

use std::collections::BTreeMap;

use promql_parser::parser::{Call, Expr, MatrixSelector};

use super::value::{EvalError, Evaluator, Labels, NAME, RangeFn, Row, Value};

/// The functions Sextant evaluates (docs/prometheus.md).
const SUPPORTED: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "count_over_time",
    "last_over_time",
    "quantile_over_time",
    "histogram_quantile",
    "abs",
    "ceil",
    "floor",
    "round",
    "sqrt",
    "exp",
    "ln",
    "log2",
    "log10",
    "sgn",
    "clamp",
    "clamp_min",
    "clamp_max",
    "absent",
    "time",
    "vector",
    "scalar",
    "label_replace",
    "sort",
    "sort_desc",
];

pub fn supported(name: &str) -> bool {
    SUPPORTED.contains(&name)
}

fn matrix_arg(expr: &Expr) -> Result<&MatrixSelector, EvalError> {
    match expr {
        Expr::MatrixSelector(ms) => Ok(ms),
        Expr::Paren(p) => matrix_arg(&p.expr),
        _ => Err(EvalError::Unsupported(
            "a range-vector function's argument must be a range selector (subqueries are not supported)".into(),
        )),
    }
}

fn string_arg(expr: &Expr) -> Result<&str, EvalError> {
    match expr {
        Expr::StringLiteral(s) => Ok(&s.val),
        Expr::Paren(p) => string_arg(&p.expr),
        _ => Err(EvalError::BadData("expected a string argument".into())),
    }
}

/// Go's math.Max/Min: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

pub fn call(engine: &dyn Evaluator, call: &Call) -> Result<Value, EvalError> {
    let args = &call.args.args;
    let name = call.func.name;
    let over = |keep_name: bool, f: &RangeFn<'_>| -> Result<Value, EvalError> {
        let ms = matrix_arg(&args[0])?;
        engine.over_range(ms, keep_name, f).map(Value::Vector)
    };
    match name {
        "rate" | "increase" | "delta" => {
            let counter = name != "delta";
            let per_second = name == "rate";
            let seconds = matrix_arg(&args[0])?.range.as_secs_f64();
            over(false, &|s, w| {
                extrapolated(s, w.from, w.to, counter).map(|v| if per_second { v / seconds } else { v })
            })
        }
        "irate" => over(false, &|s, _| instant_delta(s, true, true)),
        "idelta" => over(false, &|s, _| instant_delta(s, false, false)),
        "avg_over_time" => over(false, &|s, _| {
            let mut mean = 0.0;
            for (count, (_, v)) in s.iter().enumerate() {
                let count = (count + 1) as f64;
                mean += v / count - mean / count;
            }
            Some(mean)
        }),
        "sum_over_time" => over(false, &|s, _| Some(s.iter().map(|(_, v)| v).sum())),
        "min_over_time" => over(false, &|s, _| {
            Some(
                s.iter()
                    .map(|(_, v)| *v)
                    .fold(s[0].1, |m, v| if v < m || m.is_nan() { v } else { m }),
            )
        }),
        "max_over_time" => over(false, &|s, _| {
            Some(
                s.iter()
                    .map(|(_, v)| *v)
                    .fold(s[0].1, |m, v| if v > m || m.is_nan() { v } else { m }),
            )
        }),
        "count_over_time" => over(false, &|s, _| Some(s.len() as f64)),
        "last_over_time" => over(true, &|s, _| s.last().map(|(_, v)| *v)),
        "quantile_over_time" => {
            let q = engine.scalar_arg(&args[0])?;
            let ms = matrix_arg(&args[1])?;
            engine
                .over_range(ms, false, &|s, w| {
                    let mut values: Vec<f64> = s.iter().map(|(_, v)| *v).collect();
                    Some(quantile(q[w.step], &mut values))
                })
                .map(Value::Vector)
        }
        "histogram_quantile" => {
            let q = engine.scalar_arg(&args[0])?;
            let rows = engine.vector_arg(&args[1])?;
            Ok(Value::Vector(histogram_quantile(&q, rows, engine.times().len())))
        }
        "abs" => simple(engine, &args[0], f64::abs),
        "ceil" => simple(engine, &args[0], f64::ceil),
        "floor" => simple(engine, &args[0], f64::floor),
        "sqrt" => simple(engine, &args[0], f64::sqrt),
        "exp" => simple(engine, &args[0], f64::exp),
        "ln" => simple(engine, &args[0], f64::ln),
        "log2" => simple(engine, &args[0], f64::log2),
        "log10" => simple(engine, &args[0], f64::log10),
        "sgn" => simple(engine, &args[0], |v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        "round" => {
            let to = match args.get(1) {
                Some(a) => engine.scalar_arg(a)?,
                None => vec![1.0; engine.times().len()],
            };
            with_steps(engine, &args[0], true, |v, step| {
                let inverse = 1.0 / to[step];
                (v * inverse + 0.5).floor() / inverse
            })
        }
        "clamp_min" => {
            let min = engine.scalar_arg(&args[1])?;
            with_steps(engine, &args[0], true, |v, step| go_max(min[step], v))
        }
        "clamp_max" => {
            let max = engine.scalar_arg(&args[1])?;
            with_steps(engine, &args[0], true, |v, step| go_min(max[step], v))
        }
        "clamp" => {
            let min = engine.scalar_arg(&args[1])?;
            let max = engine.scalar_arg(&args[2])?;
            let mut rows = engine.vector_arg(&args[0])?;
            for row in &mut rows {
                row.labels.remove(NAME);
                for (step, slot) in row.values.iter_mut().enumerate() {
                    if max[step] < min[step] {
                        *slot = None;
                    } else if let Some(v) = slot {
                        *v = go_max(min[step], go_min(max[step], *v));
                    }
                }
            }
            rows.retain(|r| r.values.iter().any(Option::is_some));
            Ok(Value::Vector(rows))
        }
        "time" => Ok(Value::Scalar(
            engine.times().iter().map(|t| *t as f64 / 1000.0).collect(),
        )),
        "vector" => {
            let s = engine.scalar_arg(&args[0])?;
            Ok(Value::Vector(vec![Row {
                labels: Labels::new(),
                values: s.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let rows = engine.vector_arg(&args[0])?;
            Ok(Value::Scalar(
                (0..engine.times().len())
                    .map(|step| {
                        let mut present = rows.iter().filter_map(|r| r.values[step]);
                        match (present.next(), present.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "absent" => {
            let rows = engine.vector_arg(&args[0])?;
            let labels = absent_labels(&args[0]);
            let values: Vec<Option<f64>> = (0..engine.times().len())
                .map(|step| (!rows.iter().any(|r| r.values[step].is_some())).then_some(1.0))
                .collect();
            Ok(Value::Vector(if values.iter().any(Option::is_some) {
                vec![Row { labels, values }]
            } else {
                Vec::new()
            }))
        }
        "label_replace" => label_replace(engine, args),
        "sort" | "sort_desc" => {
            let mut rows = engine.vector_arg(&args[0])?;
            let desc = name == "sort_desc";
            rows.sort_by(|a, b| {
                let (x, y) = (a.values[0].unwrap_or(f64::NAN), b.values[0].unwrap_or(f64::NAN));
                let order = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
                if desc { order.reverse() } else { order }
            });
            Ok(Value::Vector(rows))
        }
        other => Err(EvalError::Unsupported(format!(
            "the function {other}() is not supported (docs/prometheus.md lists the subset)"
        ))),
    }
}

fn simple(engine: &dyn Evaluator, arg: &Expr, f: fn(f64) -> f64) -> Result<Value, EvalError> {
    with_steps(engine, arg, true, |v, _| f(v))
}

fn with_steps(
    engine: &dyn Evaluator,
    arg: &Expr,
    drop_name: bool,
    f: impl Fn(f64, usize) -> f64,
) -> Result<Value, EvalError> {
    let mut rows = engine.vector_arg(arg)?;
    for row in &mut rows {
        if drop_name {
            row.labels.remove(NAME);
        }
        for (step, slot) in row.values.iter_mut().enumerate() {
            if let Some(v) = slot {
                *v = f(*v, step);
            }
        }
    }
    Ok(Value::Vector(rows))
}

/// rate/increase/delta over `samples` (within `[range_start, range_end]`),
/// extrapolated to the range's edges as Prometheus 2.x does.
pub fn extrapolated(samples: &[(i64, f64)], range_start: i64, range_end: i64, counter: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first_t, first_v) = samples[0];
    let (last_t, last_v) = samples[samples.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        let mut last = 0.0;
        for (_, v) in samples {
            if *v < last {
                result += last;
            }
            last = *v;
        }
    }
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (samples.len() - 1) as f64;
    if counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { average / 2.0 };
    interval += if to_end < threshold { to_end } else { average / 2.0 };
    Some(result * (interval / sampled))
}

/// irate/idelta: the last two samples.
fn instant_delta(samples: &[(i64, f64)], counter: bool, per_second: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (prev_t, prev_v) = samples[samples.len() - 2];
    let (last_t, last_v) = samples[samples.len() - 1];
    let mut result = if counter && last_v < prev_v {
        last_v
    } else {
        last_v - prev_v
    };
    let interval = last_t - prev_t;
    if interval == 0 {
        return None;
    }
    if per_second {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Prometheus' quantile: linear interpolation between the closest ranks.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (lo, hi) = (values[lower as usize], values[upper as usize]);
    lo * (1.0 - weight) + hi * weight
}

fn histogram_quantile(q: &[f64], rows: Vec<Row>, steps: usize) -> Vec<Row> {
    // Buckets per series (labels without `le` and the name).
    let mut groups: BTreeMap<Labels, Vec<(f64, &Row)>> = BTreeMap::new();
    for row in &rows {
        let Some(le) = row.labels.get("le") else { continue };
        let Some(bound) = parse_le(le) else { continue };
        let mut labels = row.labels.clone();
        labels.remove("le");
        labels.remove(NAME);
        groups.entry(labels).or_default().push((bound, row));
    }
    let mut out = Vec::new();
    for (labels, buckets) in groups {
        let mut values = vec![None; steps];
        for (step, slot) in values.iter_mut().enumerate() {
            let mut at: Vec<(f64, f64)> = buckets
                .iter()
                .filter_map(|(bound, row)| row.values[step].map(|v| (*bound, v)))
                .collect();
            if at.is_empty() {
                continue;
            }
            *slot = Some(bucket_quantile(q[step], &mut at));
        }
        if values.iter().any(Option::is_some) {
            out.push(Row { labels, values });
        }
    }
    out
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Prometheus' bucketQuantile over (upper bound, cumulative count) pairs.
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds, then make the counts monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(bound, count) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => merged.push((bound, count)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// absent()'s labels: the selector's equality matchers (not the name).
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut labels = Labels::new();
    let mut seen = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == NAME {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) {
            if !seen.insert(m.name.clone()) {
                // Two equality matchers on one label: Prometheus leaves it out.
                labels.remove(&m.name);
                continue;
            }
            labels.insert(m.name.clone(), m.value.clone());
        }
    }
    labels
}

fn label_replace(engine: &dyn Evaluator, args: &[Box<Expr>]) -> Result<Value, EvalError> {
    let mut rows = engine.vector_arg(&args[0])?;
    let dst = string_arg(&args[1])?;
    let replacement = string_arg(&args[2])?;
    let src = string_arg(&args[3])?;
    let pattern = string_arg(&args[4])?;
    let regex = regex::Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| EvalError::BadData(format!("invalid regular expression in label_replace(): {e}")))?;
    if !valid_label_name(dst) {
        return Err(EvalError::BadData(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    for row in &mut rows {
        let value = row.labels.get(src).map_or("", String::as_str).to_owned();
        if let Some(captures) = regex.captures(&value) {
            let mut out = String::new();
            captures.expand(replacement, &mut out);
            if out.is_empty() {
                row.labels.remove(dst);
            } else {
                row.labels.insert(dst.to_owned(), out);
            }
        }
    }
    Ok(Value::Vector(rows))
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
