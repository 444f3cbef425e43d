//! Counts and shares worded the way people write them, for the config tools'
//! reports (`validate`, `diff`, `explain`, `test-routes`).

/// `n thing` / `n things`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `w` of `total` as a percentage: `25%`, `33.3%`; `0%` of nothing.
pub fn percent(w: u64, total: u64) -> String {
    if total == 0 {
        return "0%".into();
    }
    let p = w as f64 * 100.0 / total as f64;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round() as u64)
    } else {
        format!("{p:.1}%")
    }
}
