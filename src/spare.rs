//! Per-worker spare buffers: a connection that needs a buffer only while bytes
//! are in flight takes one from its worker's list and gives it back when it goes
//! idle, so idle connections hold none and busy ones reuse a few instead of
//! allocating (and zero-filling) one per read or response. Each list is a
//! `thread_local!` of its owner (the HTTP/1 codec's read and response buffers, the
//! TLS stream's record buffers) and keeps at most [`KEEP`] items.

use std::cell::RefCell;
use std::thread::LocalKey;

/// The most items one list keeps per worker.
pub const KEEP: usize = 32;

/// One worker's spares of one kind.
pub type List<T> = RefCell<Vec<T>>;

/// A spare from `list`, if it has one (none while the thread exits).
pub fn take<T: 'static>(list: &'static LocalKey<List<T>>) -> Option<T> {
    list.try_with(|l| l.borrow_mut().pop()).ok().flatten()
}

/// Keep `item` in `list` unless it already holds [`KEEP`]; the caller decides
/// whether the item is worth keeping (emptied, not grown).
pub fn keep<T: 'static>(list: &'static LocalKey<List<T>>, item: T) {
    // (Not while the thread exits: then the item is just dropped.)
    let _ = list.try_with(|l| {
        let mut l = l.borrow_mut();
        if l.len() < KEEP {
            l.push(item);
        }
    });
}

/// How many spares `list` holds (tests).
pub fn kept<T: 'static>(list: &'static LocalKey<List<T>>) -> usize {
    list.with(|l| l.borrow().len())
}
