//! Small pieces every networked part of AuroraQ needs, in one place: exponential backoff with
//! jitter, `Retry-After` parsing, redaction of secrets in URLs and connection strings, sleeps
//! that end on cancellation, calendar arithmetic on epoch microseconds, and integers' digits
//! without allocation.

pub mod backoff;
pub mod cancel;
pub mod int;
pub mod redact;
pub mod retry_after;
pub mod time;

pub use backoff::{jitter_up, Backoff};
pub use cancel::{sleep_or_cancel, until_cancelled};
pub use int::IntDigits;
pub use redact::{redact, scrub};
pub use retry_after::parse_retry_after;
pub use tokio_util::sync::CancellationToken;
