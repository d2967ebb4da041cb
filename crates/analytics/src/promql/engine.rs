//! PromQL evaluation with Prometheus 2.x's semantics, over any [`Source`]
//! of raw samples.
//!
//! A query is evaluated in two passes: [`plan`] walks the expression and
//! names every selector with the time span it needs (its range or the
//! lookback delta, before its offset); the caller loads those from the
//! store; then [`Engine::eval`] computes the result at every step from the
//! loaded samples, without further I/O. Instant vectors are kept as rows
//! with one optional value per step, so a range query is one walk.
//!
//! Selection follows Prometheus 2.x: an instant selector at `t` takes the
//! newest sample in `[t - lookback, t]` unless that sample is a staleness
//! marker; a range selector takes the samples in `[t - range, t]`, markers
//! left out. (Prometheus 3.0 made both intervals open on the left.)

use std::collections::{BTreeMap, HashMap};

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector, Offset, VectorMatchCardinality,
    VectorSelector,
};

use super::functions;
pub use super::value::*;

/// A selector to load: matchers and the span `[from, to]` in milliseconds.
#[derive(Debug, Clone)]
pub struct Need {
    pub key: usize,
    pub matchers: Matchers,
    pub from: i64,
    pub to: i64,
}

/// The steps of an evaluation: `start`, `start + step`, … up to `end`.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    pub start: i64,
    pub end: i64,
    /// 0 for an instant query.
    pub step: i64,
    pub lookback: i64,
}

impl Steps {
    pub fn times(&self) -> Vec<i64> {
        if self.step <= 0 {
            return vec![self.start];
        }
        let count = (self.end - self.start) / self.step + 1;
        (0..count).map(|i| self.start + i * self.step).collect()
    }
}

fn selector_key(vs: &VectorSelector) -> usize {
    std::ptr::from_ref(vs) as usize
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Some(Offset::Neg(d)) => -i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        None => 0,
    }
}

fn duration_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The selectors `expr` reads, each with the span it needs; refuses what
/// the subset does not evaluate.
pub fn plan(expr: &Expr, steps: &Steps) -> Result<Vec<Need>, EvalError> {
    let mut needs = Vec::new();
    walk(expr, steps, &mut needs)?;
    Ok(needs)
}

fn walk(expr: &Expr, steps: &Steps, needs: &mut Vec<Need>) -> Result<(), EvalError> {
    let mut need = |vs: &VectorSelector, range: i64| -> Result<(), EvalError> {
        if vs.at.is_some() {
            return Err(EvalError::Unsupported("the @ modifier is not supported".into()));
        }
        let offset = offset_ms(&vs.offset);
        needs.push(Need {
            key: selector_key(vs),
            matchers: with_name(vs),
            from: steps.start - offset - range,
            to: steps.end - offset,
        });
        Ok(())
    };
    match expr {
        Expr::VectorSelector(vs) => need(vs, steps.lookback),
        Expr::MatrixSelector(MatrixSelector { vs, range }) => need(vs, duration_ms(range)),
        Expr::Aggregate(AggregateExpr { expr, param, .. }) => {
            if let Some(param) = param {
                walk(param, steps, needs)?;
            }
            walk(expr, steps, needs)
        }
        Expr::Unary(u) => walk(&u.expr, steps, needs),
        Expr::Binary(b) => {
            walk(&b.lhs, steps, needs)?;
            walk(&b.rhs, steps, needs)
        }
        Expr::Paren(p) => walk(&p.expr, steps, needs),
        Expr::Call(call) => {
            if !functions::supported(call.func.name) {
                return Err(EvalError::Unsupported(format!(
                    "the function {}() is not supported (docs/prometheus.md lists the subset)",
                    call.func.name
                )));
            }
            call.args.args.iter().try_for_each(|a| walk(a, steps, needs))
        }
        Expr::Subquery(_) => Err(EvalError::Unsupported("subqueries are not supported".into())),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions are not supported".into())),
    }
}

/// A selector's matchers with its metric name as a `__name__` matcher.
pub fn with_name(vs: &VectorSelector) -> Matchers {
    let mut matchers = vs.matchers.clone();
    if let Some(name) = &vs.name
        && !matchers.matchers.iter().any(|m| m.name == NAME)
    {
        matchers
            .matchers
            .push(promql_parser::label::Matcher::new(MatchOp::Equal, NAME, name));
    }
    matchers
}

/// Whether `labels` satisfy `matchers` (a missing label matches as "").
pub fn matches(matchers: &Matchers, labels: &Labels) -> bool {
    let one = |set: &[promql_parser::label::Matcher]| {
        set.iter()
            .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
    };
    if matchers.or_matchers.is_empty() {
        one(&matchers.matchers)
    } else {
        matchers.or_matchers.iter().any(|set| one(set))
    }
}

pub struct Engine {
    pub steps: Steps,
    times: Vec<i64>,
    data: HashMap<usize, Vec<Series>>,
    /// The most values (series × steps) one intermediate vector may hold.
    max_points: usize,
}

impl Engine {
    pub fn new(steps: Steps, data: HashMap<usize, Vec<Series>>, max_points: usize) -> Self {
        Self {
            times: steps.times(),
            steps,
            data,
            max_points,
        }
    }

    pub fn step_times(&self) -> &[i64] {
        &self.times
    }

    fn n(&self) -> usize {
        self.times.len()
    }

    /// `expr`'s value; like Prometheus, a vector with two series of one
    /// label set at one step (e.g. after a function dropped the names) is
    /// an error.
    pub fn evaluate(&self, expr: &Expr) -> Result<Value, EvalError> {
        let value = self.eval_node(expr)?;
        if let Value::Vector(rows) = &value {
            check_unique(rows)?;
        }
        Ok(value)
    }

    fn eval_node(&self, expr: &Expr) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.n()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.evaluate(&p.expr),
            Expr::Unary(u) => match self.evaluate(&u.expr)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(rows) => Ok(Value::Vector(
                    rows.into_iter()
                        .map(|mut r| {
                            r.labels.remove(NAME);
                            r.values.iter_mut().flatten().for_each(|v| *v = -*v);
                            r
                        })
                        .collect(),
                )),
                _ => Err(EvalError::BadData(
                    "unary minus needs a scalar or an instant vector".into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs)?)),
            Expr::MatrixSelector(ms) => {
                if self.steps.step > 0 {
                    return Err(EvalError::BadData(
                        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
                            .into(),
                    ));
                }
                Ok(Value::Matrix(self.range_at(ms, self.times[0])))
            }
            Expr::Call(call) => self.call(call),
            Expr::Aggregate(agg) => self.aggregate(agg),
            Expr::Binary(b) => self.binary(b),
            Expr::Subquery(_) | Expr::Extension(_) => Err(EvalError::Unsupported("not supported".into())),
        }
    }

    fn loaded(&self, vs: &VectorSelector) -> &[Series] {
        self.data.get(&selector_key(vs)).map_or(&[], Vec::as_slice)
    }

    fn check_points(&self, rows: usize) -> Result<(), EvalError> {
        if rows.saturating_mul(self.n()) > self.max_points {
            return Err(EvalError::Limit(format!(
                "the query would hold {} values ({} series × {} steps); at most {} are allowed \
                 (analytics.prometheus.max_points): narrow the selectors or raise the step",
                rows.saturating_mul(self.n()),
                rows,
                self.n(),
                self.max_points
            )));
        }
        Ok(())
    }

    /// An instant selector at every step.
    fn instant(&self, vs: &VectorSelector) -> Result<Vec<Row>, EvalError> {
        let series = self.loaded(vs);
        self.check_points(series.len())?;
        let offset = offset_ms(&vs.offset);
        let lookback = self.steps.lookback;
        let mut rows = Vec::with_capacity(series.len());
        for s in series {
            let mut values = Vec::with_capacity(self.n());
            let mut any = false;
            for &t in &self.times {
                let t = t - offset;
                // The newest sample at or before t.
                let i = s.samples.partition_point(|(ts, _)| *ts <= t);
                let value = (i > 0)
                    .then(|| s.samples[i - 1])
                    .filter(|(ts, v)| *ts >= t - lookback && !is_stale(*v))
                    .map(|(_, v)| v);
                any |= value.is_some();
                values.push(value);
            }
            if any {
                rows.push(Row {
                    labels: s.labels.clone(),
                    values,
                });
            }
        }
        Ok(rows)
    }

    /// A range selector's samples at one time (markers left out).
    fn range_at(&self, ms: &MatrixSelector, t: i64) -> Vec<Series> {
        let offset = offset_ms(&ms.vs.offset);
        let range = duration_ms(&ms.range);
        let (from, to) = (t - offset - range, t - offset);
        self.loaded(&ms.vs)
            .iter()
            .filter_map(|s| {
                let samples: Vec<(i64, f64)> = window(&s.samples, from, to)
                    .iter()
                    .copied()
                    .filter(|(_, v)| !is_stale(*v))
                    .collect();
                (!samples.is_empty()).then(|| Series {
                    labels: s.labels.clone(),
                    samples,
                })
            })
            .collect()
    }

    /// A function of a range vector, at every step: `f(samples, step time)`.
    fn range_fn(&self, ms: &MatrixSelector, keep_name: bool, f: &RangeFn<'_>) -> Result<Vec<Row>, EvalError> {
        let series = self.loaded(&ms.vs);
        self.check_points(series.len())?;
        let offset = offset_ms(&ms.vs.offset);
        let range = duration_ms(&ms.range);
        let mut rows = Vec::with_capacity(series.len());
        let mut buf = Vec::new();
        for s in series {
            let mut values = Vec::with_capacity(self.n());
            let mut any = false;
            for (step, &t) in self.times.iter().enumerate() {
                let (from, to) = (t - offset - range, t - offset);
                buf.clear();
                buf.extend(window(&s.samples, from, to).iter().filter(|(_, v)| !is_stale(*v)));
                let value = if buf.is_empty() {
                    None
                } else {
                    f(&buf, Window { step, from, to })
                };
                any |= value.is_some();
                values.push(value);
            }
            if any {
                let mut labels = s.labels.clone();
                if !keep_name {
                    labels.remove(NAME);
                }
                rows.push(Row { labels, values });
            }
        }
        Ok(rows)
    }

    fn call(&self, call: &Call) -> Result<Value, EvalError> {
        functions::call(self, call)
    }
}

impl Evaluator for Engine {
    fn times(&self) -> &[i64] {
        &self.times
    }

    fn eval(&self, expr: &Expr) -> Result<Value, EvalError> {
        self.evaluate(expr)
    }

    fn over_range(&self, ms: &MatrixSelector, keep_name: bool, f: &RangeFn<'_>) -> Result<Vec<Row>, EvalError> {
        self.range_fn(ms, keep_name, f)
    }
}

impl Engine {
    fn aggregate(&self, agg: &AggregateExpr) -> Result<Value, EvalError> {
        let rows = self.vector_arg(&agg.expr)?;
        let op = agg.op.id();
        let param = match &agg.param {
            Some(p) if matches!(op, token::T_TOPK | token::T_BOTTOMK | token::T_QUANTILE) => Some(self.scalar_arg(p)?),
            Some(_) => {
                return Err(EvalError::Unsupported(format!(
                    "the aggregation {} is not supported",
                    agg.op
                )));
            }
            None => None,
        };
        let key = |labels: &Labels| -> Labels {
            match &agg.modifier {
                None => Labels::new(),
                Some(LabelModifier::Include(by)) => labels
                    .iter()
                    .filter(|(k, _)| by.labels.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Some(LabelModifier::Exclude(without)) => labels
                    .iter()
                    .filter(|(k, _)| *k != NAME && !without.labels.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        };
        let mut groups: BTreeMap<Labels, Vec<usize>> = BTreeMap::new();
        for (i, row) in rows.iter().enumerate() {
            groups.entry(key(&row.labels)).or_default().push(i);
        }
        let n = self.n();
        if matches!(op, token::T_TOPK | token::T_BOTTOMK) {
            let k = param.unwrap_or_default();
            let top = op == token::T_TOPK;
            let mut out: Vec<Row> = rows
                .iter()
                .map(|r| Row {
                    labels: r.labels.clone(),
                    values: vec![None; n],
                })
                .collect();
            for members in groups.values() {
                for (step, &want) in k.iter().enumerate() {
                    if want.is_nan() || want < 1.0 {
                        continue;
                    }
                    let mut present: Vec<(usize, f64)> = members
                        .iter()
                        .filter_map(|&i| rows[i].values[step].map(|v| (i, v)))
                        .collect();
                    // NaN sorts last for both (as Prometheus' heaps keep it).
                    present.sort_by(|a, b| {
                        let (x, y) = if top { (b.1, a.1) } else { (a.1, b.1) };
                        match (x.is_nan(), y.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                        }
                    });
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let take = (want as usize).min(present.len());
                    for &(i, v) in &present[..take] {
                        out[i].values[step] = Some(v);
                    }
                }
            }
            out.retain(|r| r.values.iter().any(Option::is_some));
            return Ok(Value::Vector(out));
        }
        let mut out = Vec::with_capacity(groups.len());
        for (labels, members) in groups {
            let mut values = vec![None; n];
            let mut present = Vec::with_capacity(members.len());
            for (step, slot) in values.iter_mut().enumerate() {
                present.clear();
                present.extend(members.iter().filter_map(|&i| rows[i].values[step]));
                if present.is_empty() {
                    continue;
                }
                *slot = Some(match op {
                    token::T_SUM => present.iter().sum(),
                    token::T_AVG => {
                        let mut mean = 0.0;
                        for (count, v) in present.iter().enumerate() {
                            let count = (count + 1) as f64;
                            mean += v / count - mean / count;
                        }
                        mean
                    }
                    token::T_MIN => present
                        .iter()
                        .copied()
                        .fold(f64::NAN, |m, v| if m > v || m.is_nan() { v } else { m }),
                    token::T_MAX => present
                        .iter()
                        .copied()
                        .fold(f64::NAN, |m, v| if m < v || m.is_nan() { v } else { m }),
                    token::T_COUNT => present.len() as f64,
                    token::T_GROUP => 1.0,
                    token::T_STDDEV | token::T_STDVAR => {
                        let mut mean = 0.0;
                        let mut m2 = 0.0;
                        for (count, v) in present.iter().enumerate() {
                            let count = (count + 1) as f64;
                            let delta = v - mean;
                            mean += delta / count;
                            m2 += delta * (v - mean);
                        }
                        let var = m2 / present.len() as f64;
                        if op == token::T_STDDEV { var.sqrt() } else { var }
                    }
                    token::T_QUANTILE => {
                        functions::quantile(param.as_ref().map_or(f64::NAN, |q| q[step]), &mut present)
                    }
                    _ => {
                        return Err(EvalError::Unsupported(format!(
                            "the aggregation {} is not supported",
                            agg.op
                        )));
                    }
                });
            }
            out.push(Row { labels, values });
        }
        out.retain(|r| r.values.iter().any(Option::is_some));
        self.check_points(out.len())?;
        Ok(Value::Vector(out))
    }

    fn binary(&self, b: &BinaryExpr) -> Result<Value, EvalError> {
        let op = b.op;
        let bool_mode = b.return_bool();
        if op.is_set_operator() {
            return self.set_operation(b);
        }
        let lhs = self.evaluate(&b.lhs)?;
        let rhs = self.evaluate(&b.rhs)?;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
                l.iter()
                    .zip(&r)
                    .map(|(x, y)| {
                        let (v, keep) = apply(op, *x, *y);
                        if op.is_comparison_operator() {
                            f64::from(u8::from(keep))
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Value::Vector(rows), Value::Scalar(s)) => Ok(Value::Vector(vector_scalar(op, bool_mode, rows, &s, false))),
            (Value::Scalar(s), Value::Vector(rows)) => Ok(Value::Vector(vector_scalar(op, bool_mode, rows, &s, true))),
            (Value::Vector(l), Value::Vector(r)) => self.vector_vector(b, op, bool_mode, l, r).map(Value::Vector),
            _ => Err(EvalError::BadData(format!(
                "operator {op} needs scalars or instant vectors"
            ))),
        }
    }

    fn matching(&self, b: &BinaryExpr) -> Result<(bool, Vec<String>), EvalError> {
        let Some(modifier) = &b.modifier else {
            return Ok((false, Vec::new()));
        };
        if !matches!(
            modifier.card,
            VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany
        ) {
            return Err(EvalError::Unsupported(
                "group_left and group_right are not supported".into(),
            ));
        }
        Ok(match &modifier.matching {
            Some(LabelModifier::Include(on)) => (true, on.labels.clone()),
            Some(LabelModifier::Exclude(ignoring)) => (false, ignoring.labels.clone()),
            None => (false, Vec::new()),
        })
    }

    fn vector_vector(
        &self,
        b: &BinaryExpr,
        op: TokenType,
        bool_mode: bool,
        lhs: Vec<Row>,
        rhs: Vec<Row>,
    ) -> Result<Vec<Row>, EvalError> {
        let (on, names) = self.matching(b)?;
        let signature = |labels: &Labels| signature(labels, on, &names);
        let n = self.n();
        let rhs_sigs: Vec<Labels> = rhs.iter().map(|r| signature(&r.labels)).collect();
        let mut by_sig: HashMap<&Labels, Vec<usize>> = HashMap::new();
        for (i, sig) in rhs_sigs.iter().enumerate() {
            by_sig.entry(sig).or_default().push(i);
        }
        let mut out: BTreeMap<Labels, Row> = BTreeMap::new();
        for l in &lhs {
            let sig = signature(&l.labels);
            let Some(partners) = by_sig.get(&sig) else {
                continue;
            };
            let mut labels = l.labels.clone();
            if on {
                labels.retain(|k, _| names.contains(k));
            } else {
                labels.retain(|k, _| !names.contains(k));
            }
            if is_arithmetic(op) || bool_mode {
                labels.remove(NAME);
            }
            for step in 0..n {
                let Some(x) = l.values[step] else { continue };
                let mut found = partners.iter().filter_map(|&j| rhs[j].values[step]);
                let Some(y) = found.next() else { continue };
                if found.next().is_some() {
                    return Err(EvalError::Execution(format!(
                        "found duplicate series for the match group {} on the right hand-side of the operation; \
                         many-to-many matching not allowed: matching labels must be unique on one side",
                        fmt_labels(&sig)
                    )));
                }
                let (v, keep) = apply(op, x, y);
                let value = if op.is_comparison_operator() {
                    if bool_mode {
                        Some(f64::from(u8::from(keep)))
                    } else {
                        keep.then_some(x)
                    }
                } else {
                    Some(v)
                };
                let Some(value) = value else { continue };
                let row = out.entry(labels.clone()).or_insert_with(|| Row {
                    labels: labels.clone(),
                    values: vec![None; n],
                });
                if row.values[step].is_some() {
                    return Err(EvalError::Execution(format!(
                        "multiple matches for labels {}: many-to-one matching must be explicit (group_left/group_right)",
                        fmt_labels(&sig)
                    )));
                }
                row.values[step] = Some(value);
            }
        }
        Ok(out.into_values().collect())
    }

    fn set_operation(&self, b: &BinaryExpr) -> Result<Value, EvalError> {
        let lhs = self.vector_arg(&b.lhs)?;
        let rhs = self.vector_arg(&b.rhs)?;
        let (on, names) = self.matching(b)?;
        let n = self.n();
        let sig = |labels: &Labels| signature(labels, on, &names);
        // Per step, the signatures present on the right.
        let mut right: HashMap<Labels, Vec<bool>> = HashMap::new();
        for r in &rhs {
            let present = right.entry(sig(&r.labels)).or_insert_with(|| vec![false; n]);
            for (step, v) in r.values.iter().enumerate() {
                present[step] |= v.is_some();
            }
        }
        let op = b.op.id();
        let mut out = Vec::new();
        match op {
            token::T_LAND | token::T_LUNLESS => {
                for mut l in lhs {
                    let present = right.get(&sig(&l.labels));
                    for (step, v) in l.values.iter_mut().enumerate() {
                        let there = present.is_some_and(|p| p[step]);
                        if (op == token::T_LAND) != there {
                            *v = None;
                        }
                    }
                    if l.values.iter().any(Option::is_some) {
                        out.push(l);
                    }
                }
            }
            _ => {
                // or: the left, then right series whose signature the left lacks at that step.
                let mut left: HashMap<Labels, Vec<bool>> = HashMap::new();
                for l in &lhs {
                    let present = left.entry(sig(&l.labels)).or_insert_with(|| vec![false; n]);
                    for (step, v) in l.values.iter().enumerate() {
                        present[step] |= v.is_some();
                    }
                }
                out.extend(lhs);
                for mut r in rhs {
                    let present = left.get(&sig(&r.labels));
                    for (step, v) in r.values.iter_mut().enumerate() {
                        if present.is_some_and(|p| p[step]) {
                            *v = None;
                        }
                    }
                    if r.values.iter().any(Option::is_some) {
                        out.push(r);
                    }
                }
            }
        }
        Ok(Value::Vector(out))
    }
}

fn check_unique(rows: &[Row]) -> Result<(), EvalError> {
    let mut order: Vec<&Row> = rows.iter().collect();
    order.sort_by(|a, b| a.labels.cmp(&b.labels));
    for pair in order.windows(2) {
        if pair[0].labels == pair[1].labels
            && pair[0]
                .values
                .iter()
                .zip(&pair[1].values)
                .any(|(a, b)| a.is_some() && b.is_some())
        {
            return Err(EvalError::Execution(format!(
                "vector cannot contain metrics with the same labelset {}",
                fmt_labels(&pair[0].labels)
            )));
        }
    }
    Ok(())
}

/// The samples of `samples` (ascending) within `[from, to]`.
pub fn window(samples: &[(i64, f64)], from: i64, to: i64) -> &[(i64, f64)] {
    let lo = samples.partition_point(|(t, _)| *t < from);
    let hi = samples.partition_point(|(t, _)| *t <= to);
    &samples[lo..hi.max(lo)]
}

fn signature(labels: &Labels, on: bool, names: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| {
            if on {
                names.contains(k)
            } else {
                *k != NAME && !names.contains(k)
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn fmt_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn is_arithmetic(op: TokenType) -> bool {
    matches!(
        op.id(),
        token::T_ADD | token::T_SUB | token::T_MUL | token::T_DIV | token::T_MOD | token::T_POW | token::T_ATAN2
    )
}

/// `x op y`: the arithmetic result, and for comparisons whether it holds.
fn apply(op: TokenType, x: f64, y: f64) -> (f64, bool) {
    match op.id() {
        token::T_ADD => (x + y, true),
        token::T_SUB => (x - y, true),
        token::T_MUL => (x * y, true),
        token::T_DIV => (x / y, true),
        // Go's math.Mod: the result has the sign of x, like Rust's %.
        token::T_MOD => (x % y, true),
        token::T_POW => (x.powf(y), true),
        token::T_ATAN2 => (x.atan2(y), true),
        token::T_EQLC => (x, x == y),
        token::T_NEQ => (x, x != y),
        token::T_GTR => (x, x > y),
        token::T_LSS => (x, x < y),
        token::T_GTE => (x, x >= y),
        token::T_LTE => (x, x <= y),
        _ => (f64::NAN, false),
    }
}

fn vector_scalar(op: TokenType, bool_mode: bool, rows: Vec<Row>, s: &[f64], scalar_left: bool) -> Vec<Row> {
    let comparison = op.is_comparison_operator();
    rows.into_iter()
        .filter_map(|mut row| {
            for (step, slot) in row.values.iter_mut().enumerate() {
                let Some(v) = *slot else { continue };
                let (x, y) = if scalar_left { (s[step], v) } else { (v, s[step]) };
                let (result, keep) = apply(op, x, y);
                *slot = if comparison {
                    if bool_mode {
                        Some(f64::from(u8::from(keep)))
                    } else {
                        keep.then_some(v)
                    }
                } else {
                    Some(result)
                };
            }
            if is_arithmetic(op) || bool_mode {
                row.labels.remove(NAME);
            }
            row.values.iter().any(Option::is_some).then_some(row)
        })
        .collect()
}
