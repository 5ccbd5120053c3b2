//! Starts a real log service on a free loopback port for a test.
