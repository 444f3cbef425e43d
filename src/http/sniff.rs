//! A read-side watcher for HTTP/1 request framing on the connections hyper serves
//! (those the own codec in `h1` handed over: HTTP/1.0, `Expect`, upgrades,
//! absolute-form, malformed heads; the codec refuses conflicting framing itself).
//! hyper, following RFC 9112, drops `Content-Length` when `Transfer-Encoding` is
//! also present and uses chunked framing; we want such requests (a
//! request-smuggling signature) rejected, never forwarded. The watcher follows
//! message boundaries in the byte stream (heads, counted and chunked bodies) and
//! raises a flag on the connection when a head carries both.
//! It raises another when a request line carries a `#` (a fragment, which hyper and
//! `http::Uri` would drop silently; attache refuses it), and says whether a head is
//! half-read (so a header-read timeout can be told from an idle close).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What is kept of a request line or of a header line that is not
/// Content-Length / Transfer-Encoding, and of a chunk-size line (its size comes
/// first; what is past this is extensions, skipped).
const MAX_LINE: usize = 128;
/// What is kept of a Content-Length or Transfer-Encoding line: the whole value
/// matters (`Transfer-Encoding:` + padding + `chunked`). A longer line than this is
/// over every head limit hyper is given, so hyper refuses the head.
const MAX_FRAMING_LINE: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    /// Reading a head; the tracker's `line` keeps the start of the current line.
    Head {
        first: bool,
        cl: Option<u64>,
        te: bool,
        te_chunked: bool,
        overflow: bool,
        /// The current line cannot be Content-Length or Transfer-Encoding (or the
        /// end of the head): it is passed over without being copied.
        skip: bool,
    },
    /// Skipping a counted body.
    Body(u64),
    /// Reading a chunk-size line (into the tracker's `line`).
    ChunkSize,
    /// Skipping chunk data (+ its CRLF).
    ChunkData(u64),
    /// Trailers after the last chunk, until an empty line.
    Trailers { line_len: usize },
    /// Not HTTP/1 (h2 preface) or unparseable: hyper decides.
    Off,
}

fn new_head() -> State {
    State::Head {
        first: true,
        cl: None,
        te: false,
        te_chunked: false,
        overflow: false,
        skip: false,
    }
}

/// What the watcher reports, shared with the connection.
#[derive(Default, Clone)]
pub struct Flags {
    /// A head carried both Content-Length and Transfer-Encoding.
    pub framing: Arc<AtomicBool>,
    /// A request line carried a `#`.
    pub fragment: Arc<AtomicBool>,
    /// Part of a request head has been read, not its end.
    pub head_pending: Arc<AtomicBool>,
}

pub struct Sniff<IO> {
    io: IO,
    tracker: Tracker,
}

struct Tracker {
    state: State,
    flags: Flags,
    /// The last value stored in `flags.head_pending`.
    pending: bool,
    /// The start (at most `MAX_LINE` bytes) of the head or chunk-size line being
    /// read; one buffer for the connection's lifetime.
    line: Vec<u8>,
}

impl<IO> Sniff<IO> {
    pub fn new(io: IO, flags: Flags) -> Sniff<IO> {
        Sniff {
            io,
            tracker: Tracker::new(flags),
        }
    }
}

/// `line` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = line.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

impl Tracker {
    fn new(flags: Flags) -> Tracker {
        Tracker {
            state: new_head(),
            flags,
            pending: false,
            line: Vec::with_capacity(MAX_LINE),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.follow(data);
        let pending = match &self.state {
            State::Head { first, .. } => !*first || !self.line.is_empty(),
            _ => false,
        };
        if pending != self.pending {
            self.pending = pending;
            self.flags.head_pending.store(pending, Ordering::Release);
        }
    }

    /// Advance the framing state machine over `data`. One function on purpose: each
    /// arm consumes bytes and picks the next state, and the states share the line
    /// buffer, so splitting it would pass the same borrowed fields to every piece.
    fn follow(&mut self, mut data: &[u8]) {
        let Tracker {
            state, flags, line, ..
        } = self;
        let (flag, fragment) = (&flags.framing, &flags.fragment);
        while !data.is_empty() {
            match state {
                State::Off => return,
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        *state = new_head();
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        line.clear();
                        *state = State::ChunkSize;
                    }
                }
                State::ChunkSize => {
                    let end = memchr::memchr(b'\n', data);
                    let part = &data[..end.unwrap_or(data.len())];
                    // The size is at the start; a long line is long extensions,
                    // which are skipped rather than ending the watch (a request
                    // must not be able to switch the watcher off for the ones after
                    // it on the connection).
                    let room = MAX_LINE.saturating_sub(line.len());
                    line.extend_from_slice(&part[..part.len().min(room)]);
                    match end {
                        None => return,
                        Some(i) => data = &data[i + 1..],
                    }
                    let s = String::from_utf8_lossy(line);
                    let s = s.trim();
                    if s.is_empty() {
                        // The CRLF after chunk data.
                        line.clear();
                        continue;
                    }
                    let hex = s.split(';').next().unwrap_or("").trim();
                    *state = match u64::from_str_radix(hex, 16) {
                        Ok(0) => State::Trailers { line_len: 0 },
                        Ok(n) => State::ChunkData(n),
                        Err(_) => State::Off,
                    };
                    line.clear();
                }
                State::Trailers { line_len } => {
                    let b = data[0];
                    data = &data[1..];
                    if b == b'\n' {
                        if *line_len == 0 {
                            *state = new_head();
                        } else {
                            *line_len = 0;
                        }
                    } else if b != b'\r' {
                        *line_len += 1;
                    }
                }
                State::Head {
                    first,
                    cl,
                    te,
                    te_chunked,
                    overflow,
                    skip,
                } => {
                    // A whole line (or what this read has of it) at a time.
                    let end = memchr::memchr(b'\n', data);
                    let part = &data[..end.unwrap_or(data.len())];
                    if !*first && !*skip && !*overflow && line.is_empty() {
                        // Only Content-Length, Transfer-Encoding and the empty line
                        // ending the head matter here; most lines start otherwise.
                        if let Some(b) = part.first() {
                            *skip = !matches!(b.to_ascii_lowercase(), b'c' | b't' | b'\r');
                        }
                    }
                    if *first && memchr::memchr(b'#', part).is_some() {
                        fragment.store(true, Ordering::Release);
                    }
                    if !*skip {
                        // Content-Length and Transfer-Encoding lines are kept whole
                        // (up to hyper's limits), the rest only in part.
                        let framing = !*first && is_framing_line(line, part);
                        let cap = if framing { MAX_FRAMING_LINE } else { MAX_LINE };
                        let room = cap.saturating_sub(line.len());
                        line.extend_from_slice(&part[..part.len().min(room)]);
                        if part.len() > room {
                            *overflow = true;
                        }
                    }
                    match end {
                        None => return,
                        Some(i) => data = &data[i + 1..],
                    }
                    if std::mem::take(skip) {
                        continue;
                    }
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if *first {
                        if line.is_empty() {
                            // Stray CRLF between messages is tolerated.
                            continue;
                        }
                        if line.starts_with(b"PRI * HTTP/2") {
                            *state = State::Off;
                            return;
                        }
                        *first = false;
                        line.clear();
                        *overflow = false;
                        continue;
                    }
                    if line.is_empty() && !*overflow {
                        // End of head.
                        if cl.is_some() && *te {
                            flag.store(true, Ordering::Release);
                        }
                        *state = if *te {
                            if *te_chunked {
                                State::ChunkSize
                            } else {
                                State::Off
                            }
                        } else {
                            match *cl {
                                Some(0) | None => new_head(),
                                Some(n) => State::Body(n),
                            }
                        };
                        continue;
                    }
                    if let Some(v) = strip_prefix_ci(line, b"content-length:") {
                        match std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.trim().parse::<u64>().ok())
                        {
                            Some(n) => *cl = Some(n),
                            None => {
                                // hyper rejects it; stop following the stream.
                                *state = State::Off;
                                return;
                            }
                        }
                    } else if let Some(v) = strip_prefix_ci(line, b"transfer-encoding:") {
                        *te = true;
                        let v = v.trim_ascii();
                        *te_chunked =
                            v.len() >= 7 && v[v.len() - 7..].eq_ignore_ascii_case(b"chunked");
                    }
                    line.clear();
                    if line.capacity() > 4 * MAX_LINE {
                        // A long framing line grew it; keep idle connections small.
                        line.shrink_to(MAX_LINE);
                    }
                    *overflow = false;
                }
            }
        }
    }
}

/// Whether the head line that `line` (kept so far) continues with `part` names
/// Content-Length or Transfer-Encoding, as far as the bytes seen tell.
fn is_framing_line(line: &[u8], part: &[u8]) -> bool {
    const NAMES: [&[u8]; 2] = [b"content-length:", b"transfer-encoding:"];
    let mut start = [0u8; 18];
    let have = line.len().min(18);
    start[..have].copy_from_slice(&line[..have]);
    let more = part.len().min(18 - have);
    start[have..have + more].copy_from_slice(&part[..more]);
    let seen = &start[..have + more];
    NAMES.iter().any(|n| {
        let k = n.len().min(seen.len());
        seen[..k].eq_ignore_ascii_case(&n[..k])
    })
}

impl<IO: AsyncRead + Unpin> AsyncRead for Sniff<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Sniff { io, tracker } = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if !matches!(tracker.state, State::Off) {
                tracker.feed(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Sniff<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The fuzz harness's entry (see `crate::fuzz`): the flags the watcher raises on
/// a stream read as `chunks`, one read each: (framing, fragment, head pending).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn flags_for_fuzzing<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (bool, bool, bool) {
    let flags = Flags::default();
    let mut tracker = Tracker::new(flags.clone());
    for c in chunks {
        tracker.feed(c);
    }
    let get = |f: &Arc<AtomicBool>| f.load(Ordering::Acquire);
    (
        get(&flags.framing),
        get(&flags.fragment),
        get(&flags.head_pending),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (framing conflict, fragment, head pending) after feeding `chunks`.
    fn flags(chunks: &[&[u8]]) -> (bool, bool, bool) {
        let flags = Flags::default();
        let mut s = Tracker::new(flags.clone());
        for c in chunks {
            s.feed(c);
        }
        let get = |f: &Arc<AtomicBool>| f.load(Ordering::Acquire);
        (
            get(&flags.framing),
            get(&flags.fragment),
            get(&flags.head_pending),
        )
    }

    #[test]
    fn says_when_a_head_is_half_read() {
        assert!(!flags(&[b""]).2);
        assert!(flags(&[b"GE"]).2);
        assert!(flags(&[b"GET / HTTP/1.1\r\n"]).2);
        assert!(flags(&[b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: aaa"]).2);
        assert!(!flags(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).2);
        assert!(!flags(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"]).2);
        assert!(flags(&[b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n"]).2);
    }

    fn run(chunks: &[&[u8]]) -> bool {
        flags(chunks).0
    }

    #[test]
    fn flags_a_fragment_in_a_request_line_only() {
        assert!(flags(&[b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"]).1);
        assert!(flags(&[b"GET http://a/x?y#", b"z HTTP/1.0\r\n\r\n"]).1);
        let long = format!("GET /{}#x HTTP/1.1\r\n\r\n", "a".repeat(300));
        assert!(flags(&[long.as_bytes()]).1);
        assert!(!flags(&[b"GET /a HTTP/1.1\r\nX-A: #1\r\n\r\n"]).1);
        // Body bytes are not a request line.
        assert!(!flags(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n#\r\n"]).1);
    }

    /// Found by the `http1_sniff` fuzz target's author: a long line must not switch
    /// the watcher off for the requests after it on the same connection.
    #[test]
    fn long_lines_do_not_switch_the_watch_off() {
        let smuggle: &[u8] =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        // A 200-byte chunk extension before it.
        let ext = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
            "a".repeat(200)
        );
        // A padded Transfer-Encoding value before it.
        let padded = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:{}chunked\r\n\r\n0\r\n\r\n",
            " ".repeat(120)
        );
        for first in [ext, padded] {
            let mut all = first.clone().into_bytes();
            all.extend_from_slice(smuggle);
            assert!(run(&[&all]), "{first:?}");
            let bytes: Vec<&[u8]> = all.chunks(7).collect();
            assert!(run(&bytes), "{first:?} in pieces");
            // And the first request alone is not flagged.
            assert!(!run(&[first.as_bytes()]), "{first:?} alone");
        }
    }

    #[test]
    fn flags_cl_and_te_in_either_order() {
        assert!(run(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]));
        assert!(run(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
        ]));
    }

    #[test]
    fn follows_bodies_so_body_bytes_are_not_heads() {
        let body = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut req =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(!run(&[&req]));
        // Byte by byte makes no difference.
        let bytes: Vec<&[u8]> = req.chunks(1).collect();
        assert!(!run(&bytes));
        // Chunked bodies are followed too.
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(run(&[chunked]));
    }

    #[test]
    fn any_case_and_any_split_and_long_lines() {
        let long = "v".repeat(300);
        let req = format!(
            "POST / HTTP/1.1\r\nX-Long: {long}\r\nCONTENT-length: 5\r\nx-other: content-length: 1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
        );
        let req = req.as_bytes();
        assert!(run(&[req]));
        for at in 1..req.len() {
            assert!(run(&[&req[..at], &req[at..]]), "split at {at}");
        }
        // A header that only mentions the names is not one of them.
        assert!(!run(&[
            b"POST / HTTP/1.1\r\nX-A: content-length: 1\r\nX-B: transfer-encoding: chunked\r\n\r\n"
        ]));
        // An upper-case `Chunked` body is followed to the next head.
        assert!(run(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    #[test]
    fn ignores_h2_preface() {
        assert!(!run(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n"
        ]));
    }
}
