//! An archive upload's body: the spool read in large blocks on a blocking thread,
//! gzip'd there at level 1 when the service takes gzip, handed to the request through
//! a small bounded channel.
//!
//! Reading through `tokio::fs` went 8 KiB at a time, each step a hop to the blocking
//! pool and back (futex and epoll wake-ups led the engine's profile of a 2 M-line
//! close), and level 6 spent most of the close in `deflate_medium`. Level 1 keeps
//! the archive ~1.5× larger and costs a fraction of the CPU; the service stores
//! what it receives.

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::Path;

/// Bytes of spool read per step.
const BLOCK: usize = 1024 * 1024;
/// Compressed bytes collected before they are handed on.
const SEND_AT: usize = 256 * 1024;
/// Pieces in flight between the reading thread and the request: memory stays
/// bounded by a few blocks whatever the archive's size.
const IN_FLIGHT: usize = 4;

type Piece = Result<Bytes, std::io::Error>;

/// The body of `ndjson` (gzip'd when `gzip`), and the file's length.
pub(crate) fn spool_body(ndjson: &Path, gzip: bool) -> std::io::Result<(reqwest::Body, u64)> {
    let file = std::fs::File::open(ndjson)?;
    let len = file.metadata()?.len();
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let result = if gzip {
            pump_gzip(file, &tx)
        } else {
            pump_plain(file, &tx)
        };
        // A closed channel means the request ended (failed or timed out): nothing to
        // report to. Otherwise a read error fails the body, and so the attempt.
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    Ok((reqwest::Body::wrap_stream(stream), len))
}

/// Ends quietly when the receiver is gone.
fn send(tx: &tokio::sync::mpsc::Sender<Piece>, bytes: Bytes) -> std::io::Result<bool> {
    Ok(tx.blocking_send(Ok(bytes)).is_ok())
}

fn pump_plain(
    mut file: std::fs::File,
    tx: &tokio::sync::mpsc::Sender<Piece>,
) -> std::io::Result<()> {
    loop {
        let mut buf = vec![0u8; BLOCK];
        let n = read_block(&mut file, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if !send(tx, Bytes::from(buf))? {
            return Ok(());
        }
    }
}

fn pump_gzip(
    mut file: std::fs::File,
    tx: &tokio::sync::mpsc::Sender<Piece>,
) -> std::io::Result<()> {
    let mut enc = GzEncoder::new(Vec::with_capacity(SEND_AT * 2), Compression::fast());
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = read_block(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])?;
        if enc.get_ref().len() >= SEND_AT {
            let out = std::mem::replace(enc.get_mut(), Vec::with_capacity(SEND_AT * 2));
            if !send(tx, Bytes::from(out))? {
                return Ok(());
            }
        }
    }
    let rest = enc.finish()?;
    if !rest.is_empty() {
        send(tx, Bytes::from(rest))?;
    }
    Ok(())
}

/// Fills `buf` as far as the file goes (a short read is not the end).
fn read_block(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
