//! Real Thrift peers for the end-to-end tests and the load generator: an origin and
//! a client on the Apache `thrift` crate (synchronous, on std threads), written as
//! generated code would be for this service:
//!
//! ```thrift
//! exception NotFound { 1: string why }
//! service Users {
//!   string getUser(1: i64 id) throws (1: NotFound nf)   // also served as findUser
//!   void ping()
//!   oneway void log(1: string line)
//! }
//! ```
//!
//! `getUser(0)` throws NotFound, `getUser(-1)` fails with a TApplicationException,
//! `getUser(950)` answers after 200ms and `getUser(999)` after 1.5s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType, TMultiplexedOutputProtocol,
    TOutputProtocol, TStructIdentifier, TType,
};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
};
pub use thrift::{ApplicationError, ApplicationErrorKind};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Framed,
    Unframed,
}

pub type In = Box<dyn TInputProtocol + Send>;
pub type Out = Box<dyn TOutputProtocol + Send>;

/// A stream shared by a reader and a writer half (a TLS stream cannot be cloned).
/// Only one side uses it at a time: a client writes a call, then reads the reply.
pub struct Shared<S>(pub Arc<Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<S: Read> Read for Shared<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).read(buf)
    }
}

impl<S: Write> Write for Shared<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// Input and output protocols over a reader and a writer.
pub fn protocols_rw(
    r: Box<dyn Read + Send>,
    w: Box<dyn Write + Send>,
    protocol: Protocol,
    transport: Transport,
) -> (In, Out) {
    let (r, w): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match transport {
        Transport::Framed => (
            Box::new(TFramedReadTransport::new(r)),
            Box::new(TFramedWriteTransport::new(w)),
        ),
        Transport::Unframed => (
            Box::new(TBufferedReadTransport::new(r)),
            Box::new(TBufferedWriteTransport::new(w)),
        ),
    };
    match protocol {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::new(r, false)),
            Box::new(TBinaryOutputProtocol::new(w, true)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::new(r)),
            Box::new(TCompactOutputProtocol::new(w)),
        ),
    }
}

pub fn protocols(s: &TcpStream, protocol: Protocol, transport: Transport) -> (In, Out) {
    let r = s.try_clone().expect("clone");
    let w = s.try_clone().expect("clone");
    protocols_rw(Box::new(r), Box::new(w), protocol, transport)
}

pub struct Origin {
    pub addr: SocketAddr,
    /// The lines of `log` oneway calls, in arrival order.
    pub logs: mpsc::Receiver<String>,
}

/// A Thrift server speaking `protocol` over `transport`, a thread per connection;
/// replies to `getUser(id)` with `"<name>:<id>"`.
pub fn start_origin(name: &'static str, protocol: Protocol, transport: Transport) -> Origin {
    start_origin_on("127.0.0.1:0", name, protocol, transport)
}

pub fn start_origin_on(
    bind: &str,
    name: &'static str,
    protocol: Protocol,
    transport: Transport,
) -> Origin {
    let (tx, logs) = mpsc::channel();
    let addr = crate::origin::serve_each_blocking(bind, move |s| {
        let _ = s.set_nodelay(true);
        let (mut i, mut o) = protocols(&s, protocol, transport);
        while serve_one(name, &mut *i, &mut *o, &tx).is_ok() {}
    });
    Origin { addr, logs }
}

/// Read a struct's fields: field 1 as i64 or string, everything else skipped.
fn read_args(i: &mut dyn TInputProtocol) -> thrift::Result<(Option<i64>, Option<String>)> {
    let (mut n, mut s) = (None, None);
    i.read_struct_begin()?;
    loop {
        let f = i.read_field_begin()?;
        match (f.field_type, f.id) {
            (TType::Stop, _) => break,
            (TType::I64, Some(1)) => n = Some(i.read_i64()?),
            (TType::String, Some(1)) => s = Some(i.read_string()?),
            (t, _) => i.skip(t)?,
        }
        i.read_field_end()?;
    }
    i.read_struct_end()?;
    i.read_message_end()?;
    Ok((n, s))
}

fn serve_one(
    origin: &str,
    i: &mut dyn TInputProtocol,
    o: &mut dyn TOutputProtocol,
    logs: &mpsc::Sender<String>,
) -> thrift::Result<()> {
    let m = i.read_message_begin()?;
    let method = m.name.rsplit(':').next().unwrap_or_default().to_owned();
    let (n, s) = read_args(i)?;
    let reply = |o: &mut dyn TOutputProtocol, kind: TMessageType| {
        o.write_message_begin(&TMessageIdentifier::new(&method, kind, m.sequence_number))
    };
    match method.as_str() {
        "log" => {
            let _ = logs.send(s.unwrap_or_default());
            return Ok(());
        }
        "getUser" | "findUser" => {
            let id = n.unwrap_or_default();
            match id {
                950 => std::thread::sleep(Duration::from_millis(200)),
                999 => std::thread::sleep(Duration::from_millis(1500)),
                _ => {}
            }
            if id == -1 {
                reply(o, TMessageType::Exception)?;
                let e = ApplicationError::new(ApplicationErrorKind::InternalError, "boom");
                thrift::Error::write_application_error_to_out_protocol(&e, o)?;
            } else {
                reply(o, TMessageType::Reply)?;
                o.write_struct_begin(&TStructIdentifier::new("getUser_result"))?;
                if id == 0 {
                    o.write_field_begin(&TFieldIdentifier::new("nf", TType::Struct, 1))?;
                    o.write_struct_begin(&TStructIdentifier::new("NotFound"))?;
                    o.write_field_begin(&TFieldIdentifier::new("why", TType::String, 1))?;
                    o.write_string("no such user")?;
                    o.write_field_end()?;
                    o.write_field_stop()?;
                    o.write_struct_end()?;
                } else {
                    o.write_field_begin(&TFieldIdentifier::new("success", TType::String, 0))?;
                    o.write_string(&format!("{origin}:{id}"))?;
                }
                o.write_field_end()?;
                o.write_field_stop()?;
                o.write_struct_end()?;
            }
        }
        "ping" => {
            reply(o, TMessageType::Reply)?;
            o.write_struct_begin(&TStructIdentifier::new("ping_result"))?;
            o.write_field_stop()?;
            o.write_struct_end()?;
        }
        _ => {
            reply(o, TMessageType::Exception)?;
            let e = ApplicationError::new(ApplicationErrorKind::UnknownMethod, "unknown");
            thrift::Error::write_application_error_to_out_protocol(&e, o)?;
        }
    }
    o.write_message_end()?;
    o.flush()
}

/// How a call failed, compared through `Debug` in the assertions.
#[derive(Debug)]
pub enum CallErr {
    NotFound,
    App(ApplicationErrorKind),
    Other(String),
}

/// The hand-written equivalent of a generated client.
pub struct Client {
    pub i: In,
    pub o: Out,
    pub seq: i32,
}

impl Client {
    pub fn connect(
        addr: SocketAddr,
        protocol: Protocol,
        transport: Transport,
        service: Option<&str>,
    ) -> Client {
        let s = TcpStream::connect(addr).expect("connect to proxy");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        let (i, o) = protocols(&s, protocol, transport);
        Client::over(i, o, service)
    }

    /// A client over TLS (rustls, server name `sni`) to `addr`.
    pub fn connect_tls(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        sni: &str,
        protocol: Protocol,
        transport: Transport,
    ) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(tls, name).map_err(std::io::Error::other)?;
        let stream = Shared(Arc::new(Mutex::new(rustls::StreamOwned::new(conn, tcp))));
        let (i, o) = protocols_rw(
            Box::new(stream.clone()),
            Box::new(stream),
            protocol,
            transport,
        );
        Ok(Client::over(i, o, None))
    }

    /// A client over protocols built by the caller.
    pub fn over(i: In, o: Out, service: Option<&str>) -> Client {
        let o: Out = match service {
            Some(svc) => Box::new(TMultiplexedOutputProtocol::new(svc, o)),
            None => o,
        };
        Client { i, o, seq: 0 }
    }

    pub fn send(&mut self, name: &str, kind: TMessageType, arg: Option<(TType, &str)>) {
        self.try_send(name, kind, arg).expect("send call");
    }

    pub fn try_send(
        &mut self,
        name: &str,
        kind: TMessageType,
        arg: Option<(TType, &str)>,
    ) -> thrift::Result<()> {
        self.seq += 1;
        let o = &mut self.o;
        o.write_message_begin(&TMessageIdentifier::new(name, kind, self.seq))?;
        o.write_struct_begin(&TStructIdentifier::new("args"))?;
        match arg {
            Some((TType::I64, v)) => {
                o.write_field_begin(&TFieldIdentifier::new("id", TType::I64, 1))?;
                o.write_i64(v.parse().unwrap_or_default())?;
                o.write_field_end()?;
            }
            Some((_, v)) => {
                o.write_field_begin(&TFieldIdentifier::new("line", TType::String, 1))?;
                o.write_string(v)?;
                o.write_field_end()?;
            }
            None => {}
        }
        o.write_field_stop()?;
        o.write_struct_end()?;
        o.write_message_end()?;
        o.flush()
    }

    /// Read a reply: Ok(Some(string)) for field 0, Ok(None) for void.
    pub fn receive(&mut self) -> Result<Option<String>, CallErr> {
        let i = &mut self.i;
        let m = i
            .read_message_begin()
            .map_err(|e| CallErr::Other(e.to_string()))?;
        if m.sequence_number != self.seq {
            return Err(CallErr::Other(format!(
                "seq {} != {}",
                m.sequence_number, self.seq
            )));
        }
        if m.message_type == TMessageType::Exception {
            let e = thrift::Error::read_application_error_from_in_protocol(&mut **i)
                .map_err(|e| CallErr::Other(e.to_string()))?;
            return Err(CallErr::App(e.kind));
        }
        let mut value = None;
        let mut nf = false;
        let r: thrift::Result<()> = (|| {
            i.read_struct_begin()?;
            loop {
                let f = i.read_field_begin()?;
                match (f.field_type, f.id) {
                    (TType::Stop, _) => break,
                    (TType::String, Some(0)) => value = Some(i.read_string()?),
                    (t, Some(1)) => {
                        nf = true;
                        i.skip(t)?;
                    }
                    (t, _) => i.skip(t)?,
                }
                i.read_field_end()?;
            }
            i.read_struct_end()?;
            i.read_message_end()
        })();
        r.map_err(|e| CallErr::Other(e.to_string()))?;
        if nf {
            return Err(CallErr::NotFound);
        }
        Ok(value)
    }

    pub fn get_user(&mut self, id: i64) -> Result<String, CallErr> {
        self.call_named("getUser", id)
    }

    pub fn call_named(&mut self, name: &str, id: i64) -> Result<String, CallErr> {
        self.try_send(
            name,
            TMessageType::Call,
            Some((TType::I64, &id.to_string())),
        )
        .map_err(|e| CallErr::Other(e.to_string()))?;
        self.receive()?
            .ok_or_else(|| CallErr::Other("void reply".to_owned()))
    }

    pub fn ping(&mut self) -> Result<(), CallErr> {
        self.send("ping", TMessageType::Call, None);
        self.receive().map(|_| ())
    }

    pub fn log(&mut self, line: &str) {
        self.send("log", TMessageType::OneWay, Some((TType::String, line)));
    }
}
