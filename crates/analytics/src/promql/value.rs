//! The values PromQL evaluation passes around, and what a function needs of
//! the evaluator ([`Evaluator`]), so `functions` and `engine` do not depend
//! on each other.

use std::collections::BTreeMap;

use promql_parser::parser::{Expr, MatrixSelector};

/// A series' labels, `__name__` included, sorted by name.
pub type Labels = BTreeMap<String, String>;

pub const NAME: &str = "__name__";

/// Prometheus' staleness marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// A stored series: its labels and samples (milliseconds, ascending; a
/// staleness marker is a sample whose value is [`STALE_NAN`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The query or its parameters are wrong (Prometheus' `bad_data`).
    #[error("{0}")]
    BadData(String),
    /// A feature outside Sextant's PromQL subset (`execution`).
    #[error("{0}")]
    Unsupported(String),
    /// A documented limit, named (`execution`).
    #[error("{0}")]
    Limit(String),
    /// The query cannot be computed, e.g. duplicate series (`execution`).
    #[error("{0}")]
    Execution(String),
    #[error(transparent)]
    Source(#[from] anyhow::Error),
}

/// An instant vector over the steps: per series, its value at each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One value per step.
    Scalar(Vec<f64>),
    Vector(Vec<Row>),
    /// A range selector's samples, for an instant query of one.
    Matrix(Vec<Series>),
    String(String),
}

/// Where a range function is evaluated: the step's index and the range
/// `[from, to]` its samples were taken from (offset applied), in ms.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub step: usize,
    pub from: i64,
    pub to: i64,
}

/// A function of a range's samples (never empty) and its window.
pub type RangeFn<'a> = dyn Fn(&[(i64, f64)], Window) -> Option<f64> + 'a;

/// What PromQL functions need of the evaluator.
pub trait Evaluator {
    /// The evaluation's step times, in milliseconds.
    fn times(&self) -> &[i64];
    fn eval(&self, expr: &Expr) -> Result<Value, EvalError>;
    /// A range function at every step, over the selector's samples (markers left out).
    fn over_range(&self, ms: &MatrixSelector, keep_name: bool, f: &RangeFn<'_>) -> Result<Vec<Row>, EvalError>;

    fn scalar_arg(&self, expr: &Expr) -> Result<Vec<f64>, EvalError> {
        match self.eval(expr)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(EvalError::BadData("expected a scalar argument".into())),
        }
    }

    fn vector_arg(&self, expr: &Expr) -> Result<Vec<Row>, EvalError> {
        match self.eval(expr)? {
            Value::Vector(rows) => Ok(rows),
            _ => Err(EvalError::BadData("expected an instant vector argument".into())),
        }
    }
}
