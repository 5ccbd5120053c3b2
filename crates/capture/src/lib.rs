//! tracing layers for runlog: console format, per-request capture, live forwarding.
