//! Putting a value into a span's extensions from outside the subscriber.
//!
//! The capture ring and the stream sink belong to a request, not to the subscriber, so
//! they are stored on the request's span. The registry is found through the current
//! dispatcher (`Layered` forwards `downcast_ref` to the `Registry` at its core).

use tracing_subscriber::registry::{LookupSpan, Registry};

/// Stores `value` in the extensions of `span`. Returns `false` when the span is disabled
/// or the process' subscriber is not built on a `Registry` (nothing can be recorded then).
pub(crate) fn insert_extension<T: Send + Sync + 'static>(span: &tracing::Span, value: T) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return false;
        };
        let Some(data) = registry.span(id) else {
            return false;
        };
        let mut extensions = data.extensions_mut();
        // A span re-attached replaces its previous value rather than panicking.
        extensions.remove::<T>();
        extensions.insert(value);
        true
    })
    .unwrap_or(false)
}
