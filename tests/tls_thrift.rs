//! A Thrift listener behind mTLS through the real binary: a framed-binary client over
//! rustls (the `thrift` crate on a `rustls::StreamOwned`) to a plain Thrift origin.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use support::pki::{self, Leaf, Pki};
use support::Proxy;
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A framed-binary Thrift origin: `getUser(id)` answers `"user:<id>"`.
fn start_origin() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let r = s.try_clone().expect("clone");
                let mut i = TBinaryInputProtocol::new(TFramedReadTransport::new(r), false);
                let mut o = TBinaryOutputProtocol::new(TFramedWriteTransport::new(s), true);
                while serve_one(&mut i, &mut o).is_ok() {}
            });
        }
    });
    addr
}

fn serve_one(i: &mut dyn TInputProtocol, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
    let m = i.read_message_begin()?;
    let mut id = 0;
    i.read_struct_begin()?;
    loop {
        let f = i.read_field_begin()?;
        match (f.field_type, f.id) {
            (TType::Stop, _) => break,
            (TType::I64, Some(1)) => id = i.read_i64()?,
            (t, _) => i.skip(t)?,
        }
        i.read_field_end()?;
    }
    i.read_struct_end()?;
    i.read_message_end()?;
    o.write_message_begin(&TMessageIdentifier::new(
        &m.name,
        TMessageType::Reply,
        m.sequence_number,
    ))?;
    o.write_struct_begin(&TStructIdentifier::new("getUser_result"))?;
    o.write_field_begin(&TFieldIdentifier::new("success", TType::String, 0))?;
    o.write_string(&format!("user:{id}"))?;
    o.write_field_end()?;
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_message_end()?;
    o.flush()
}

/// A blocking TLS stream the `thrift` crate can read and write through two handles.
#[derive(Clone)]
struct Shared(Arc<std::sync::Mutex<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.flush()
    }
}

/// Call `getUser(id)` over TLS (SNI `server.test`); the reply string.
fn get_user_over_tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    id: i64,
) -> thrift::Result<String> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let name = rustls::pki_types::ServerName::try_from("server.test").expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let stream = Shared(Arc::new(std::sync::Mutex::new(rustls::StreamOwned::new(
        conn, tcp,
    ))));
    let mut o = TBinaryOutputProtocol::new(TFramedWriteTransport::new(stream.clone()), true);
    let mut i = TBinaryInputProtocol::new(TFramedReadTransport::new(stream), false);
    o.write_message_begin(&TMessageIdentifier::new("getUser", TMessageType::Call, 1))?;
    o.write_struct_begin(&TStructIdentifier::new("getUser_args"))?;
    o.write_field_begin(&TFieldIdentifier::new("id", TType::I64, 1))?;
    o.write_i64(id)?;
    o.write_field_end()?;
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_message_end()?;
    o.flush()?;
    let m = i.read_message_begin()?;
    if m.message_type != TMessageType::Reply {
        return Err(thrift::Error::from(format!(
            "unexpected {:?}",
            m.message_type
        )));
    }
    let mut out = String::new();
    i.read_struct_begin()?;
    loop {
        let f = i.read_field_begin()?;
        match (f.field_type, f.id) {
            (TType::Stop, _) => break,
            (TType::String, Some(0)) => out = i.read_string()?,
            (t, _) => i.skip(t)?,
        }
        i.read_field_end()?;
    }
    i.read_struct_end()?;
    i.read_message_end()?;
    Ok(out)
}

#[tokio::test]
async fn thrift_listener_terminates_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "main");
    let server = pki.issue("server", &Leaf::new("server").dns(&["server.test"]));
    let client = pki.issue(
        "client",
        &Leaf::new("client").uri(&["spiffe://example.org/ns/web/sa/frontend"]),
    );
    let origin = start_origin();
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: thrift_tls
    address: 127.0.0.1:0
    protocol: thrift
    tls:
      cert_chain: {}
      private_key: {}
      client_ca: {}
      allowed_client_sans: [{{ prefix: "spiffe://example.org/ns/web/" }}]
    thrift:
      transport: framed
      protocol: binary
      routes:
        - match: {{ method: getUser }}
          route: {{ cluster: users }}
clusters:
  - name: users
    endpoints: ["{origin}"]
"#,
        server.cert, server.key, pki.ca_path
    ));
    let addr = proxy.addr("thrift_tls");

    let call = |cfg: Arc<rustls::ClientConfig>| async move {
        let task = tokio::task::spawn_blocking(move || get_user_over_tls(addr, cfg, 42));
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("thrift call timed out")
            .expect("client task")
    };
    let reply = call(pki::client_config(&pki, Some(&client), &[]))
        .await
        .expect("thrift call over mTLS");
    assert_eq!(reply, "user:42");
    let refused = call(pki::client_config(&pki, None, &[])).await;
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
    assert_eq!(
        proxy
            .stat_labels(
                "attache_tls_handshake_total",
                &[("listener", "thrift_tls"), ("result", "ok")]
            )
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .stat_labels(
                "attache_tls_handshake_total",
                &[("listener", "thrift_tls"), ("result", "no_client_cert")]
            )
            .await,
        1.0
    );
}
