//! Running toolkit subcommands of the real binary in a scratch directory, so paths
//! in its output are the short relative names the test wrote.

use std::path::Path;
use std::process::{Command, Stdio};

pub struct Dir(pub tempfile::TempDir);

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Dir {
    fn default() -> Dir {
        Dir::new()
    }
}

impl Dir {
    pub fn new() -> Dir {
        Dir(tempfile::tempdir().expect("tempdir"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Write `text` at `name` (parents created).
    pub fn write(&self, name: &str, text: &str) -> &Dir {
        let p = self.0.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
        self
    }

    /// Run `attache ARGS` in this directory, with no environment surprises.
    pub fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(crate::proxy::bin())
            .args(args)
            .current_dir(self.0.path())
            .env_remove("ATTACHE_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run attache");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A config with an HTTP listener named `web` used by several toolkit tests:
/// a header-matched canary (cors disabled), a weighted route (cors overridden), a
/// direct response and a redirect.
pub const WEB: &str = r#"listeners:
  - name: web
    address: 127.0.0.1:0
    filters:
      - headers: { response: { set: { x-served-by: attache } } }
      - cors: { allowed_origins: ["https://app.example.com"] }
    virtual_hosts:
      - name: main
        domains: ["www.example.com"]
        routes:
          - name: canary
            match: { prefix: /api/, methods: [GET], headers: [{ name: x-canary, exact: "1" }] }
            route: { cluster: api_v2, timeout: 2s, retries: { attempts: 2, retry_on: [5xx, reset] } }
            filter_overrides: { cors: disabled }
          - name: api
            match: { prefix: /api/ }
            route:
              weighted_clusters:
                - { cluster: api_v1, weight: 90 }
                - { cluster: api_v2, weight: 10 }
              prefix_rewrite: /
            filter_overrides:
              cors: { allowed_origins: ["https://partner.example.com"] }
          - name: health
            match: { path: /healthz }
            direct_response: { status: 200, body: "ok\n" }
          - name: old
            match: { prefix: /old/ }
            redirect: { path_redirect: /new/, response_code: 301 }
clusters:
  - name: api_v1
    endpoints: ["127.0.0.1:9001"]
  - name: api_v2
    endpoints: ["127.0.0.1:9002"]
"#;
