//! `tls:` blocks of listeners and clusters, reported under `<path>.tls`.

use super::Cx;

/// A `tls:` block: with file checks, build it (building validates every file and
/// setting first and returns all problems, so nothing is read twice); without, only
/// check the settings and that paths are well-formed. Problems are reported under
/// `<path>.tls`.
pub(super) fn tls_material<T>(
    cx: &mut Cx<'_>,
    path: &str,
    check_files: bool,
    check_without_files: impl FnOnce() -> crate::tls::Problems,
    build: impl FnOnce() -> Result<T, crate::tls::Problems>,
) -> Option<T> {
    let problems = if check_files {
        match build() {
            Ok(x) => return Some(x),
            Err(problems) => problems,
        }
    } else {
        check_without_files()
    };
    cx.report(&format!("{path}.tls"), problems);
    None
}
