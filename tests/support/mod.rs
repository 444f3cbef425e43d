//! Test support: the shared test kit (testkit/, crate `attache_testkit`), compiled
//! once for every test binary. `mod support; use support::{Proxy, eventually};`,
//! `support::pki`, `support::thrift_peer`, `support::fleet` ... all come from there.
#![allow(unused_imports)]

pub use attache_testkit::*;

pub mod theader_py;

/// Whether `python3` can import `module` (a test peer installed with pip); when it
/// cannot, says which package runs the tests (`.ci/run` installs them), and the
/// caller skips.
#[allow(dead_code)] // only the test binaries with Python peers call it
pub fn python_module(module: &str, package: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: python3 cannot import `{module}`; `pip install {package}` runs these tests"
        );
    }
    ok
}
