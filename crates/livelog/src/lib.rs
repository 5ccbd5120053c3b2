//! livelog: the client library that gets every log line to the runlog log service.
