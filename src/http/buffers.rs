//! Body buffers: a per-worker pool, so pushes and mirror fetches do not allocate per request.

use std::cell::RefCell;

/// Size of the buffers request bodies are received into (hashed, then written from).
pub const BODY_BUFFER_BYTES: usize = 512 * 1024;
/// Idle body buffers kept per worker; more are freed.
const BODY_BUFFERS_POOLED_MAX: usize = 32;

/// A per-worker pool of body buffers, so pushes do not allocate per request.
#[derive(Default)]
pub struct Buffers(RefCell<Vec<Vec<u8>>>);

impl Buffers {
    pub fn take(&self) -> Vec<u8> {
        self.0
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BODY_BUFFER_BYTES))
    }

    pub fn give(&self, mut buf: Vec<u8>) {
        let mut pool = self.0.borrow_mut();
        if pool.len() < BODY_BUFFERS_POOLED_MAX && buf.capacity() == BODY_BUFFER_BYTES {
            buf.clear();
            pool.push(buf);
        }
    }
}
