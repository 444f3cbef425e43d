//! The real binary under test: `attache run` on loopback ports with a ready file,
//! `attache validate`, and the shipped example configs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{get, send};

/// How long a started proxy may take to write its ready file: generous, the
/// machine may be loaded (a proxy that never gets ready still fails).
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running `attache run`. Dropping it kills and reaps the process, and prints its
/// log when the test is failing.
pub struct Proxy {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub listeners: HashMap<String, SocketAddr>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

/// The `attache` binary cargo built for this test run.
///
/// Cargo hands `CARGO_BIN_EXE_attache` to integration tests at compile time only, and
/// this crate is compiled once for all of them, so the path is found at run time:
/// the variable when cargo sets it, else next to the test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/attache`).
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("CARGO_BIN_EXE_attache") {
            return path;
        }
        let exe = std::env::current_exe().expect("path of the test executable");
        let mut dir = exe.parent().expect("test executable has a directory");
        if dir.ends_with("deps") {
            dir = dir.parent().expect("deps has a parent");
        }
        let path = dir.join(format!("attache{}", std::env::consts::EXE_SUFFIX));
        assert!(
            path.exists(),
            "no attache binary at {}: run the tests with cargo test",
            path.display()
        );
        path.to_string_lossy().into_owned()
    })
}

impl Proxy {
    /// Start with `yaml` (admin on 127.0.0.1:0 is added when absent).
    pub fn start(yaml: &str) -> Proxy {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Proxy {
        Self::start_with(yaml, &[], env)
    }

    /// Start with `yaml` (admin on 127.0.0.1:0 added when absent), extra CLI
    /// `args` and environment for the child.
    pub fn start_with(yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = if yaml.contains("admin:") {
            yaml.to_string()
        } else {
            format!("admin:\n  address: 127.0.0.1:0\n{yaml}")
        };
        let config_path = dir.path().join("attache.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        Self::spawn(dir, config_path, args, env, READY_WITHIN)
    }

    /// `attache run` on `config_path` with extra CLI `args` and environment; `dir`
    /// holds the ready file and the log. Waits for the ready file up to `ready_within`.
    pub fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> Proxy {
        let ready = dir.path().join("ready.json");
        let log_path = dir.path().join("attache.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let log2 = log.try_clone().expect("log file");
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--concurrency")
            .arg("2")
            .args(args)
            .env("ATTACHE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn attache");
        let deadline = Instant::now() + ready_within;
        let info = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    break v;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("attache exited early with {status}:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("attache did not become ready:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let admin = info["admin"]
            .as_str()
            .expect("admin")
            .parse()
            .expect("admin addr");
        let listeners = info["listeners"]
            .as_object()
            .expect("listeners")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("addr").parse().expect("addr")))
            .collect();
        Proxy {
            child: Some(child),
            dir,
            admin,
            listeners,
            config_path,
            log_path,
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(listener), path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The output lines containing `needle`, once there are exactly `n` of them
    /// (waiting up to 10 seconds: access-log lines are written asynchronously).
    pub async fn log_lines(&self, needle: &str, n: usize) -> Vec<String> {
        let what = format!("{n} log lines with {needle}");
        crate::eventually(Duration::from_secs(30), &what, || {
            let log = self.log();
            async move {
                let lines: Vec<String> = log
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_string)
                    .collect();
                (lines.len() == n).then_some(lines)
            }
        })
        .await
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: libc::kill via std is unavailable; use the `kill` command.
        let name = match sig {
            15 => "TERM",
            2 => "INT",
            1 => "HUP",
            3 => "QUIT",
            10 => "USR1",
            12 => "USR2",
            _ => "KILL",
        };
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address listener `name` is bound to now, as `/listeners` shows it
    /// (also for listeners added after startup, e.g. over xDS); `None` if absent.
    pub async fn bound_address(&self, name: &str) -> Option<String> {
        let (_, body) = self.admin_get("/listeners").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == name)?["bound_address"]
            .as_str()
            .map(str::to_string)
    }

    /// `GET` an admin path; (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = get(&format!("http://{}{}", self.admin, path), &[]).await;
        (r.status, r.text())
    }

    pub async fn admin_post(&self, path: &str) -> (u16, String) {
        let r = send(
            "POST",
            &format!("http://{}{}", self.admin, path),
            &[],
            Bytes::new(),
        )
        .await;
        (r.status, r.text())
    }

    /// The value of one stat line `name{labels}` from `/stats`, 0 when absent.
    pub async fn stat(&self, name_with_labels: &str) -> f64 {
        let (_, body) = self.admin_get("/stats").await;
        for line in body.lines() {
            if let Some((k, v)) = line.split_once(": ") {
                if k == name_with_labels {
                    return v.trim().parse().unwrap_or(0.0);
                }
            }
        }
        0.0
    }

    /// Every `/stats` line whose name starts with `prefix`: (`name{labels}`, value).
    pub async fn stats_with_prefix(&self, prefix: &str) -> Vec<(String, f64)> {
        let (_, body) = self.admin_get("/stats").await;
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().unwrap_or(0.0)))
            })
            .collect()
    }

    /// `attache_tls_handshake_total{listener,result}`: handshakes on a TLS listener
    /// that ended in `result` (`ok`, `no_client_cert`, `protocol_error`, ...).
    pub async fn tls_handshakes(&self, listener: &str, result: &str) -> f64 {
        let labels = [("listener", listener), ("result", result)];
        self.stat_labels("attache_tls_handshake_total", &labels)
            .await
    }

    /// `attache_downstream_rq_rejected_total{listener,reason}`: requests on
    /// `listener` refused before routing for `reason` (`host`, `path`,
    /// `head_timeout`, `scheme`, ...).
    pub async fn rejected(&self, listener: &str, reason: &str) -> f64 {
        let labels = [("listener", listener), ("reason", reason)];
        self.stat_labels("attache_downstream_rq_rejected_total", &labels)
            .await
    }

    /// The value of `name` with exactly these labels (any order), 0 when absent.
    pub async fn stat_labels(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, body) = self.admin_get("/stats").await;
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        for line in body.lines() {
            let Some((k, v)) = line.split_once(": ") else {
                continue;
            };
            let Some((n, rest)) = k.split_once('{') else {
                continue;
            };
            if n != name {
                continue;
            }
            let mut have: Vec<String> = rest
                .trim_end_matches('}')
                .split(',')
                .map(str::to_string)
                .collect();
            have.sort();
            if have == want {
                return v.trim().parse().unwrap_or(0.0);
            }
        }
        0.0
    }
}

/// `config/quickstart.yaml` on ephemeral ports. Its proxied route points at its own
/// admin endpoint, whose port is only known once the proxy runs: it starts with that
/// route on a refusing port, then the route is rewritten to the reported admin
/// address and applied with `POST /reload` (no port is guessed beforehand).
pub async fn quickstart() -> Proxy {
    let text = std::fs::read_to_string("config/quickstart.yaml").expect("quickstart");
    let with_route_to = |admin: SocketAddr| {
        text.replace("address: 127.0.0.1:10000", "address: 127.0.0.1:0")
            .replace("address: 127.0.0.1:9901", "address: 127.0.0.1:0")
            .replace("\"127.0.0.1:9901\"", &format!("\"{admin}\""))
    };
    let p = Proxy::start(&with_route_to(crate::origin::dead_port()));
    std::fs::write(&p.config_path, with_route_to(p.admin)).expect("write config");
    let (status, body) = p.admin_post("/reload").await;
    assert_eq!(status, 200, "quickstart reload: {body}");
    p
}

/// Replace the file at `path` the way a deploy tool should: write a sibling
/// temporary file, then rename it over `path`, so that a watcher (`--watch-config`,
/// certificate reload, file discovery) never reads a half-written file (an empty
/// config is valid and has no listeners).
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// The shipped example configs, `config/*.yaml`, sorted.
pub fn shipped_configs() -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir("config")
        .expect("config dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    entries
}

/// `attache validate --config FILE` on `yaml` written to a temp file named
/// `name`; (exit code, stdout + stderr, the file's path).
pub fn validate(name: &str, yaml: &str) -> (i32, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write config");
    let (code, out) = validate_file(&path);
    // Keep the file's path meaningful in messages; the directory goes away here.
    (code, out, path)
}

/// `attache validate --config PATH`; (exit code, stdout + stderr).
pub fn validate_file(path: &std::path::Path) -> (i32, String) {
    validate_file_env(path, &[])
}

/// `attache validate --config PATH` with extra environment for the child only.
pub fn validate_file_env(path: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(bin())
        .arg("validate")
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run attache validate");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- attache log -----\n{}\n-----------------------",
                self.log()
            );
        }
    }
}
