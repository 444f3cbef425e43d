//! `--watch-config` on a Kubernetes ConfigMap volume: kubelet publishes an update by
//! writing a new timestamped directory and atomically renaming a `..data` symlink
//! over the old one; the config file (and anything it includes) is a symlink through
//! `..data`. The proxy must notice and reload the new generation as a whole.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use support::{eventually, get, Proxy};

/// The top-level file, byte-identical in every generation: the listener keeps its
/// socket across reloads because its configured address (port 0) does not change.
const MAIN_CONFIG: &str = "admin:\n  address: 127.0.0.1:0\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    virtual_hosts: { include: vhosts.yaml }\n";

fn vhosts(body: &str) -> String {
    format!(
        "- name: all\n  domains: [\"*\"]\n  routes:\n    - match: {{ prefix: / }}\n      direct_response: {{ status: 200, body: \"{body}\" }}\n"
    )
}

/// Write one ConfigMap generation the way kubelet's atomic writer does.
fn write_generation(dir: &Path, generation: &str, main: &str, included: &str) {
    let g = dir.join(generation);
    std::fs::create_dir(&g).expect("generation dir");
    std::fs::write(g.join("attache.yaml"), main).expect("write");
    std::fs::write(g.join("vhosts.yaml"), included).expect("write");
}

/// Point `..data` at `generation` with a rename over the old link (atomic).
fn publish(dir: &Path, generation: &str) {
    let tmp = dir.join("..data_tmp");
    symlink(generation, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("rename over ..data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_follows_a_configmap_data_symlink_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_generation(
        dir.path(),
        "..2026_12_03_10_00_00.1",
        MAIN_CONFIG,
        &vhosts("v1"),
    );
    publish(dir.path(), "..2026_12_03_10_00_00.1");
    for f in ["attache.yaml", "vhosts.yaml"] {
        symlink(format!("..data/{f}"), dir.path().join(f)).expect("user-visible link");
    }
    let config = dir.path().join("attache.yaml");
    let p = Proxy::spawn(dir, config, &["--watch-config"], &[], support::READY_WITHIN);
    assert_eq!(get(&p.url("web", "/"), &[]).await.text(), "v1");

    // Only the included file changes: the top-level file is byte-identical.
    let root = p.dir.path();
    write_generation(root, "..2026_12_03_10_05_00.2", MAIN_CONFIG, &vhosts("v2"));
    publish(root, "..2026_12_03_10_05_00.2");
    std::fs::remove_dir_all(root.join("..2026_12_03_10_00_00.1")).expect("old generation");

    eventually(
        Duration::from_secs(20),
        "the swapped config to serve",
        || async { (get(&p.url("web", "/"), &[]).await.text() == "v2").then_some(()) },
    )
    .await;
    assert_eq!(
        p.stat("attache_config_reload_total{result=\"ok\"}").await,
        1.0
    );
    assert_eq!(
        p.stat("attache_config_reload_total{result=\"failed\"}")
            .await,
        0.0
    );
}
