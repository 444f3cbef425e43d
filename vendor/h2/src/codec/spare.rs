//! (attache patch) Per-thread spare buffers for the codec (PATCHES.md).
//!
//! A connection releases its read and write buffers when it goes idle; the next
//! busy moment of the same or another connection on the thread takes them back
//! from here instead of the allocator, so releasing costs little when
//! connections are busy. Each list keeps at most [`KEEP`] buffers (with the sizes
//! below, at most 768 KiB per thread) of exactly the capacity it hands out.

use bytes::BytesMut;
use std::cell::RefCell;
use std::thread::LocalKey;

/// The most buffers one list keeps per thread.
const KEEP: usize = 32;

type List = RefCell<Vec<BytesMut>>;

thread_local! {
    static READ: List = const { RefCell::new(Vec::new()) };
    static WRITE: List = const { RefCell::new(Vec::new()) };
}

/// An empty read buffer of `capacity`.
pub(crate) fn read(capacity: usize) -> BytesMut {
    take(&READ, capacity)
}

/// Give back a read buffer: kept when it is empty and nothing else refers to it
/// (frames split off it are gone), and its whole allocation is `capacity`.
pub(crate) fn give_read(buf: BytesMut, capacity: usize) {
    give(&READ, buf, capacity)
}

/// An empty write buffer of `capacity`.
pub(crate) fn write(capacity: usize) -> BytesMut {
    take(&WRITE, capacity)
}

/// Give back a write buffer (kept like a read buffer).
pub(crate) fn give_write(buf: BytesMut, capacity: usize) {
    give(&WRITE, buf, capacity)
}

fn take(list: &'static LocalKey<List>, capacity: usize) -> BytesMut {
    list.try_with(|l| l.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(capacity))
}

fn give(list: &'static LocalKey<List>, mut buf: BytesMut, capacity: usize) {
    // `try_reclaim` succeeds only for a buffer nothing else shares, and moves its
    // view back to the start of the allocation.
    if !buf.is_empty() || !buf.try_reclaim(capacity) || buf.capacity() != capacity {
        return;
    }
    // (Not while the thread exits: then the buffer is just dropped.)
    let _ = list.try_with(|l| {
        let mut l = l.borrow_mut();
        if l.len() < KEEP {
            l.push(buf);
        }
    });
}
