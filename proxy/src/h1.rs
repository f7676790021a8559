//! The HTTP/1.1 wire format shared by the upstream client (`upstream::h1`) and the
//! downstream server (`http::h1`): a head's fields as a header map (`fields`), how a
//! message's body is framed (`framing`), the body decoder (`decoder`) and the body
//! writer (`writer`).

pub mod decoder;
pub mod fields;
pub mod framing;
pub mod writer;

/// A body whose framing is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid chunked body")]
    Chunk,
    #[error("trailer section too large")]
    TrailersTooLarge,
}

/// Why writing a message's body failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The body being sent failed (its own source went away or was malformed).
    #[error("body: {0}")]
    Body(crate::upstream::pool::BoxError),
    /// The body carried more or fewer bytes than its `content-length`.
    #[error("body does not match its content-length")]
    Length,
}
