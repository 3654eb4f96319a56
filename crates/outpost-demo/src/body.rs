//! The response body type of the demo origin: a shared, immutable buffer streamed in bounded chunks.
//!
//! Large resources (the 10 MiB file, the video segments) are generated once and shared; every response
//! is a cheap `Bytes` slice of them, written to the socket 64 KiB at a time, so serving them costs no
//! per-request allocation or copy.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Largest frame handed to hyper at once.
const CHUNK: usize = 64 * 1024;

/// A body that yields `data` in frames of at most [`CHUNK`] bytes, with an exact size hint.
#[derive(Debug, Default)]
pub struct DemoBody {
    data: Bytes,
}

impl DemoBody {
    /// A body carrying `data`.
    pub fn new(data: Bytes) -> Self {
        DemoBody { data }
    }

    /// An empty body (HEAD, 304).
    pub fn empty() -> Self {
        DemoBody { data: Bytes::new() }
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = this.data.len().min(CHUNK);
        Poll::Ready(Some(Ok(Frame::data(this.data.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}
