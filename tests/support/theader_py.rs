//! The Python THeader peers (tests/support/theader_peer.py, on the Apache `thrift`
//! package): a server to start, a client to run, and whether they can run here.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/theader_peer.py")
}

/// Whether the Python THeader implementation is there; says why not when it is not.
pub fn python_thrift() -> bool {
    super::python_module("thrift.protocol.THeaderProtocol", "thrift==0.22.0")
}

/// A Python THeader (or framed) server; killed and reaped on drop.
pub struct PyServer {
    child: Child,
    pub addr: SocketAddr,
}

impl PyServer {
    pub fn start(tag: &str, framed: bool) -> PyServer {
        let mut cmd = Command::new("python3");
        cmd.arg(script()).args(["server", tag]);
        if framed {
            cmd.arg("--framed");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        let stdout = child.stdout.take().expect("stdout");
        // The server prints its port once bound; a dead server closes stdout.
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read port");
        let port: u16 = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("python server said {line:?}"));
        PyServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the Python THeader client against `addr`: one JSON value per reply.
pub async fn py_client(addr: SocketAddr, args: &[&str]) -> Vec<Value> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(script())
        .arg("client")
        .arg(addr.to_string())
        .args(args)
        .kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("python client finishes")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
