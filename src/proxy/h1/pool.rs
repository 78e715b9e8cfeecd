//! Per-thread spare buffers, so an idle client connection holds none.
//!
//! Why: most open keep-alive connections are idle, and a connection that keeps its
//! 16 KiB read buffers while it waits costs the proxy far more memory than the socket
//! itself (issue #16 measured 13 KiB per idle connection, most of it two 16 KiB read
//! buffers partly written). The fast path gives its
//! buffers back here when it starts waiting for a request head and takes them again
//! once the client's socket is readable. A busy connection takes and gives back once
//! per request: a thread-local stack push and pop, no lock, no allocation after
//! warm-up. Buffers may come back on another worker thread than they left from (tasks
//! move); each thread keeps at most [`KEEP`] of each kind and frees the rest.

use std::cell::RefCell;

use bytes::BytesMut;

/// Spare buffers one worker thread keeps, of each kind.
const KEEP: usize = 64;

/// Capacity of a fresh read buffer: room for a head; bodies grow it.
pub const READ_BUF: usize = 4 * 1024;
/// Capacity of a fresh head buffer.
const OUT_BUF: usize = 1024;

#[derive(Default)]
struct Spares {
    reads: Vec<BytesMut>,
    outs: Vec<Vec<u8>>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// Frees this thread's spare buffers. Called by its worker once a second
/// (`workers::TIDY_EVERY`). Why: spares are given back at random places in the
/// allocator's pages, and one kept buffer keeps its whole page resident; after a busy
/// period that is tens of pages per thread for a few KiB of buffers (issue #16). A
/// busy thread takes new ones at once: a few allocations a second.
pub fn trim() {
    SPARES.with(|s| *s.borrow_mut() = Spares::default());
}

/// An empty read buffer with room for at least [`READ_BUF`] bytes.
pub fn read_buf() -> BytesMut {
    let spare = SPARES.with(|s| s.borrow_mut().reads.pop());
    let mut buf = spare.unwrap_or_default();
    buf.reserve(READ_BUF);
    buf
}

/// An empty buffer for a head about to be written.
pub fn out_buf() -> Vec<u8> {
    SPARES
        .with(|s| s.borrow_mut().outs.pop())
        .unwrap_or_else(|| Vec::with_capacity(OUT_BUF))
}

/// Takes `buf` back if it is empty and has room (a buffer still holding bytes, or one
/// whose memory is shared, is left where it is); leaves an unallocated buffer behind.
pub fn give_read(buf: &mut BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let mut spare = std::mem::take(buf);
    spare.clear();
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if s.reads.len() < KEEP {
            s.reads.push(spare);
        }
    });
}

/// Takes `buf` back (its contents are dropped); leaves an unallocated buffer behind.
/// Buffers grown past 64 KiB by a large head are freed instead of kept.
pub fn give_out(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        return;
    }
    let mut spare = std::mem::take(buf);
    if spare.capacity() > 64 * 1024 {
        return;
    }
    spare.clear();
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if s.outs.len() < KEEP {
            s.outs.push(spare);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_handed_out_again_and_leaves_nothing_behind() {
        let mut buf = read_buf();
        assert!(buf.capacity() >= READ_BUF);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let ptr = buf.as_ptr();
        // Not empty: kept by its owner.
        give_read(&mut buf);
        assert!(!buf.is_empty());
        buf.clear();
        give_read(&mut buf);
        assert_eq!(buf.capacity(), 0, "the idle owner holds no memory");
        let again = read_buf();
        assert_eq!(again.as_ptr(), ptr, "the same memory, reused");
        assert!(again.is_empty() && again.capacity() >= READ_BUF);
    }

    #[test]
    fn out_buffers_are_reused_and_oversized_ones_freed() {
        let mut out = out_buf();
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let ptr = out.as_ptr();
        give_out(&mut out);
        assert_eq!(out.capacity(), 0);
        let again = out_buf();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
        let mut big = vec![0u8; 100 * 1024];
        give_out(&mut big);
        assert_eq!(big.capacity(), 0);
        assert_ne!(
            out_buf().capacity(),
            100 * 1024,
            "a 100 KiB buffer is not kept"
        );
    }
}
