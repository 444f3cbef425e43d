use std::sync::Arc;

use super::*;

fn cfg(path: &str) -> AccessLogCfg {
    AccessLogCfg {
        path: path.to_string(),
        format: Arc::new(Format::text("%RESPONSE_CODE%").unwrap_or_else(|e| panic!("{e:?}"))),
    }
}

fn wait_for(path: &std::path::Path, want: &str) -> String {
    for _ in 0..500 {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got == want {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn reopen_moves_writing_to_a_new_file_at_the_path() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("a.log");
    let p = path.to_string_lossy().to_string();
    let sinks = Sinks::default();
    let stats = Stats::new();
    let log = sinks
        .get(&cfg(&p), "l", &stats)
        .unwrap_or_else(|e| panic!("{e}"));
    log.write(&Record {
        status: 200,
        ..Record::default()
    });
    assert_eq!(wait_for(&path, "200\n"), "200\n");
    let rotated = dir.path().join("a.log.1");
    std::fs::rename(&path, &rotated).unwrap_or_else(|e| panic!("{e}"));
    log.write(&Record {
        status: 201,
        ..Record::default()
    });
    assert_eq!(wait_for(&rotated, "200\n201\n"), "200\n201\n");
    let r = sinks.reopen();
    assert_eq!(r, vec![(p.clone(), Ok(()))]);
    log.write(&Record {
        status: 202,
        ..Record::default()
    });
    assert_eq!(wait_for(&path, "202\n"), "202\n");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap_or_default(),
        "200\n201\n"
    );
}

#[test]
fn a_destination_closes_when_no_config_uses_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("b.log").to_string_lossy().to_string();
    let sinks = Sinks::default();
    let stats = Stats::new();
    let a = sinks
        .get(&cfg(&p), "a", &stats)
        .unwrap_or_else(|e| panic!("{e}"));
    let b = sinks
        .get(&cfg(&p), "b", &stats)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&a.sink, &b.sink), "one writer per path");
    drop(a);
    assert_eq!(sinks.open_paths(), vec![p.clone()]);
    drop(b);
    assert!(sinks.open_paths().is_empty());
}

#[test]
fn paths_are_checked_without_creating_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    assert!(check_path("stdout").is_ok());
    assert!(check_path("stderr").is_ok());
    let new = dir.path().join("new.log");
    assert!(check_path(&new.to_string_lossy()).is_ok());
    assert!(!new.exists());
    let missing = dir.path().join("nope/x.log");
    let e = check_path(&missing.to_string_lossy())
        .err()
        .unwrap_or_default();
    assert!(e.contains("does not exist"), "{e}");
    let e = check_path(&dir.path().to_string_lossy())
        .err()
        .unwrap_or_default();
    assert!(e.contains("is a directory"), "{e}");
}
