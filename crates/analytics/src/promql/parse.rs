//! PromQL text → expression, through `promql-parser`, guarded where that
//! crate panics instead of answering an error.
//!
//! promql-parser 0.11 turns a duration written as a bare number of seconds
//! (`x[300]`, `x offset 60`, `y[1h:30]`) into a `Duration` with
//! `Duration::from_secs_f64`, which panics on NaN, infinities and numbers
//! past `u64::MAX` seconds (`x[1e30]`, `x offset Inf`). Found by the `promql`
//! fuzz target; such numbers are refused here before the parser sees them,
//! as Prometheus refuses them ("duration out of range").

use promql_parser::parser::Expr;

/// The longest duration Prometheus accepts: an `int64` of nanoseconds.
const MAX_SECONDS: f64 = 9_223_372_036.0;

pub fn parse(query: &str) -> Result<Expr, String> {
    check_bare_durations(query)?;
    promql_parser::parser::parse(query)
}

/// Refuses a bare number in a duration's place (after `[`, after `:` inside
/// brackets, after `offset` and its sign) that no duration holds.
fn check_bare_durations(query: &str) -> Result<(), String> {
    let bytes = query.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    // Whether the next token stands where a duration does.
    let mut duration_next = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                duration_next = false;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'[' => {
                depth += 1;
                duration_next = true;
            }
            b']' => {
                depth = depth.saturating_sub(1);
                duration_next = false;
            }
            b':' if depth > 0 => duration_next = true,
            b'+' | b'-' if duration_next => {}
            c if c.is_ascii_whitespace() => {}
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' => {
                let start = i;
                while i + 1 < bytes.len() {
                    let next = bytes[i + 1];
                    let exponent_sign = matches!(next, b'+' | b'-')
                        && matches!(bytes[i], b'e' | b'E')
                        && (bytes[start].is_ascii_digit() || bytes[start] == b'.');
                    if next.is_ascii_alphanumeric() || next == b'_' || next == b'.' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let token = &query[start..=i];
                if token.eq_ignore_ascii_case("offset") {
                    duration_next = true;
                } else {
                    if duration_next
                        && let Ok(seconds) = token.parse::<f64>()
                        && !(0.0..=MAX_SECONDS).contains(&seconds)
                    {
                        return Err(format!("duration {token} out of range"));
                    }
                    duration_next = false;
                }
            }
            _ => duration_next = false,
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_no_duration_holds_are_refused_not_panicked_on() {
        for query in [
            "rate(requests_total[1m])[51111111111111111111111111111:1m]",
            "x[1e30]",
            "x[NaN]",
            "x[Inf]",
            "x offset Inf",
            "x OFFSET -1e300",
            "x[5m:1e99]",
            "x[ 1e+30 ]",
        ] {
            let error = parse(query).unwrap_err();
            assert!(error.contains("out of range"), "{query}: {error}");
        }
    }

    #[test]
    fn ordinary_durations_numbers_and_strings_parse() {
        for query in [
            "x[300]",
            "x[5m:30]",
            "x offset 60",
            "x offset -1.5",
            r#"x{a="[1e99]"} * 1e400"#,
            "job:rate5m:sum offset 1h",
            "x # [1e99]\n + 1",
            "1e400 + Inf",
        ] {
            parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        }
    }
}
