//! The one body decoder of both roles: a message body framed by length, chunked
//! or the connection's end, read from the front of the connection's read buffer.
//! The server role reads request bodies with it (`http::h1::H1Body`), the client
//! role response bodies (`upstream::h1::H1Body`); each keeps only its own I/O
//! (filling the buffer, giving the connection back).

use bytes::{Bytes, BytesMut};

use super::chunked;
use super::framing::Framing;

/// Where a body is, between the bytes read so far and its end. Small and `Copy`:
/// the server role hands it back with the connection, and [`Decoder::end_in`]
/// looks ahead without consuming.
#[derive(Debug, Clone, Copy)]
pub enum Decoder {
    /// This many bytes still to come (never 0: that is [`Decoder::Done`]).
    Length(u64),
    Chunked(chunked::Decoder),
    /// Everything until the connection closes.
    Close,
    /// Malformed: where it ends is unknown.
    Failed,
    Done,
}

impl Decoder {
    /// Where a body framed by `framing` starts.
    pub fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::None | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(chunked::Decoder::new()),
            Framing::Close => Decoder::Close,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// The next piece of the body from the front of `buf`: `Ok(Some)` a data
    /// frame (never empty), `Ok(None)` when more input is needed or the body is
    /// done. Framing buffered after the data is consumed too, so the last data
    /// frame already reports the end. An error is final ([`Decoder::Failed`]).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, chunked::Error> {
        match self {
            Decoder::Done | Decoder::Failed => Ok(None),
            _ if buf.is_empty() => Ok(None),
            Decoder::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                if *left == 0 {
                    *self = Decoder::Done;
                }
                Ok(Some(buf.split_to(n as usize).freeze()))
            }
            Decoder::Close => Ok(Some(buf.split().freeze())),
            Decoder::Chunked(d) => match d.decode(buf) {
                Ok(data) => {
                    if d.is_done() {
                        *self = Decoder::Done;
                    }
                    Ok(data)
                }
                Err(e) => {
                    *self = Decoder::Failed;
                    Err(e)
                }
            },
        }
    }

    /// Check what of the body `buf` holds (the bytes after what was decoded)
    /// without consuming it: an error the decoder will meet there.
    pub fn check(&self, buf: &[u8]) -> Result<(), chunked::Error> {
        match self {
            Decoder::Chunked(d) => d.scan(buf).map(drop),
            _ => Ok(()),
        }
    }

    /// Where the rest of the body ends in `buf`, when it is all there (and valid).
    pub fn end_in(&self, buf: &[u8]) -> Option<usize> {
        match self {
            Decoder::Done => Some(0),
            Decoder::Length(n) => (buf.len() as u64 >= *n).then_some(*n as usize),
            Decoder::Chunked(d) => d.scan(buf).ok().flatten(),
            Decoder::Close | Decoder::Failed => None,
        }
    }

    /// Body bytes known to be on their way (the rest of a length, or of the
    /// current chunk): a read-size hint.
    pub fn expected(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Chunked(d) if d.data_left() > 0 => Some(d.data_left()),
            _ => None,
        }
    }

    pub fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Decoder::Length(n) => http_body::SizeHint::with_exact(*n),
            Decoder::Done => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framing: Framing, input: &[u8]) -> (Vec<u8>, Decoder, BytesMut) {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Ok(Some(data)) = d.decode(&mut buf) {
            assert!(!data.is_empty());
            out.extend_from_slice(&data);
        }
        (out, d, buf)
    }

    #[test]
    fn each_framing_yields_its_body_and_leaves_the_rest() {
        let (body, d, rest) = all(Framing::Length(3), b"abcdef");
        assert_eq!((&body[..], &rest[..]), (&b"abc"[..], &b"def"[..]));
        assert!(d.is_done());
        let (body, d, rest) = all(Framing::Chunked, b"3\r\nabc\r\n0\r\n\r\nnext");
        assert_eq!((&body[..], &rest[..]), (&b"abc"[..], &b"next"[..]));
        assert!(d.is_done());
        let (body, d, rest) = all(Framing::Close, b"all of it");
        assert_eq!(&body[..], b"all of it");
        assert!(rest.is_empty() && !d.is_done());
        let (body, d, rest) = all(Framing::None, b"next");
        assert!(body.is_empty() && d.is_done());
        assert_eq!(&rest[..], b"next");
    }

    #[test]
    fn a_malformed_chunk_fails_the_body_for_good() {
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\nzz\r\n"[..]);
        assert_eq!(d.check(&buf), Err(chunked::Error::Size));
        assert_eq!(
            d.decode(&mut buf).ok().flatten().as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(d.decode(&mut buf), Err(chunked::Error::Size));
        assert!(matches!(d, Decoder::Failed));
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.end_in(&buf), None);
    }

    /// Every HTTP/1 body holds one, and the server role's request head and
    /// connection task carry it: it stays two words.
    #[test]
    fn the_decoder_stays_small() {
        assert_eq!(std::mem::size_of::<Decoder>(), 16);
    }

    #[test]
    fn the_end_is_found_without_consuming() {
        let d = Decoder::new(Framing::Length(4));
        assert_eq!(d.end_in(b"abc"), None);
        assert_eq!(d.end_in(b"abcde"), Some(4));
        let d = Decoder::new(Framing::Chunked);
        assert_eq!(d.end_in(b"1\r\na\r\n0\r\n\r\nGET"), Some(11));
        assert_eq!(d.expected(), None);
        assert_eq!(Decoder::new(Framing::None).end_in(b"x"), Some(0));
    }
}
