//! The one rule for idempotency keys, wherever one arrives (an
//! `Idempotency-Key` header, a job's `idempotency_key`): 1 to 200 visible
//! ASCII characters, `!` to `~` (the OpenAPI pattern `^[!-~]+$`). Keys are
//! compared byte for byte, so a key that a proxy could rewrite (spaces,
//! tabs, controls, non-ASCII) is refused rather than stored.

/// The longest key, in characters (and bytes: they are ASCII).
pub const MAX_LEN: usize = 200;

/// The rule, as an error message says it after the key's name
/// (`idempotency_key must be …`, `Idempotency-Key must be …`).
pub const RULE: &str =
    "must be 1 to 200 visible ASCII characters (! to ~): no spaces, tabs, U+0000 or other characters";

/// Whether `key` is a valid idempotency key.
pub fn valid(key: &str) -> bool {
    (1..=MAX_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_ascii_from_one_to_two_hundred() {
        assert!(valid("order-42"));
        assert!(valid("!~"));
        assert!(valid(&"k".repeat(200)));
        for bad in ["", "a b", "a\tb", "a\u{0}", "é", "k\n", &"k".repeat(201)] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}
