//! A fault-injecting HTTP proxy for tests (drops, delays, 5xx/429, mid-body closes).
