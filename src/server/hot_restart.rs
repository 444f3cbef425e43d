//! Hot restart, the new process's side: its listeners are already bound beside the
//! old process's (SO_REUSEPORT) and accepting; ask the old one to drain and exit
//! (`POST /quitquitquit` on its admin endpoint), then take the admin address once
//! the old process has released it. See docs/operations.md, "Hot restart".

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// POST /quitquitquit to the old process's admin endpoint; Ok once it said 200.
pub async fn tell_old_to_drain(admin: &str, token: Option<&str>) -> std::io::Result<()> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST /quitquitquit HTTP/1.1\r\nhost: {admin}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let head = String::from_utf8_lossy(&out[..out.len().min(64)]).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "old process answered `{}`",
                head.lines().next().unwrap_or("")
            )))
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer from the old process",
        )),
    }
}

/// Bind `addr`, retrying while it is in use (the old process is draining).
pub async fn bind_admin_when_free(
    addr: SocketAddr,
    limit: Duration,
) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + limit;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
