//! Every shipped example in `config/` passes `attache validate`.

mod support;

use std::process::Command;

#[test]
fn every_example_config_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = Command::new(support::bin())
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .expect("run attache validate");
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    assert!(
        checked.contains(&Some("thrift-sidecar.yaml".to_owned())),
        "checked {checked:?}"
    );
}
