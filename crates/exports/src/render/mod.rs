//! Renderers: an analysis (the analytics service's `Analysis` message) as
//! the bytes of one file. Pure functions of the analysis and a writer, so
//! each format is tested on its own; the service runs them off the async
//! threads (they are CPU-bound).

pub mod csv;
pub mod sarif;

/// A user-supplied string as a spreadsheet cell: text a spreadsheet would run
/// as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
/// return) gets a leading `'`, which spreadsheets show as text (OWASP
/// "CSV injection"). Numbers are never passed through here: they stay numbers.
pub fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_become_text_and_other_strings_stay() {
        for formula in [
            "=HYPERLINK(\"http://x\")",
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert!(inert(formula).starts_with('\''), "{formula}");
        }
        for text in ["cpu", "", "a=b", "<script>", "'quoted"] {
            assert_eq!(inert(text), text);
        }
    }
}
