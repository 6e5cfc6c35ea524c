//! Random resource names, so tests run in parallel and re-runs never collide.

use rand::Rng;

/// `prefix` followed by a dash and 12 random lowercase hex digits; valid as a stream or table name.
pub fn random_name(prefix: &str) -> String {
    let suffix: u64 = rand::rng().random();
    format!("{prefix}-{:012x}", suffix & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_well_formed() {
        let a = random_name("it");
        let b = random_name("it");
        assert_ne!(a, b);
        assert_eq!(a.len(), "it-".len() + 12);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
