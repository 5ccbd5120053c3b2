//! Every store's tail reads chunks bounded in bytes as well as in lines, whatever
//! the line sizes: what one tail holds at a time (and so what a viewer that stops
//! reading costs) is at most `TAIL_CHUNK_BYTES`, or one line when a single line is
//! longer. Checked on the memory store and on Redis, there also across lines moved
//! to the overflow store.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::memory::InMemory;
use runlog_protocol::{AccountId, StreamKey};
use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
use runlog_service::store::{
    MemoryLimits, MemoryStreamStore, StoredLine, StreamId, StreamStore, TAIL_CHUNK_BYTES,
    TAIL_CHUNK_LINES, TailItem,
};
use runlog_testkit::redis::RedisServer;
use std::sync::Arc;
use std::time::Duration;

fn sid(key: &str) -> StreamId {
    StreamId {
        account: AccountId::new("acc").unwrap(),
        key: StreamKey::new(key).unwrap(),
    }
}

fn line(pos: u64, out_bytes: usize) -> StoredLine {
    StoredLine {
        pos,
        json: Bytes::from(format!(
            r#"{{"pos":{pos},"out":"{}"}}"#,
            "x".repeat(out_bytes)
        )),
    }
}

/// Lines of 100 KiB (two fit a chunk, three do not), one of 600 KiB (a chunk of
/// its own), then short lines (chunks full by count).
fn mixed_lines() -> Vec<StoredLine> {
    let mut lines: Vec<_> = (0..20).map(|p| line(p, 100 << 10)).collect();
    lines.push(line(20, 600 << 10));
    lines.extend((21..21 + 5000).map(|p| line(p, 10)));
    lines
}

/// Appends `mixed_lines` in batches, closes, and checks every chunk of a tail
/// from 0 and that every line arrives once, in order.
async fn check_tail_chunks(store: &dyn StreamStore, id: &StreamId) {
    let lines = mixed_lines();
    store.open(id).await.unwrap();
    for batch in lines.chunks(50) {
        store.append(id, batch.to_vec()).await.unwrap();
    }
    store.close(id).await.unwrap();
    let mut tail = store.tail(id, 0).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), tail.next())
            .await
            .expect("a closed stream's tail ends")
            .expect("a tail ends with Eof")
            .unwrap();
        let TailItem::Lines(chunk) = item else {
            break;
        };
        let bytes: usize = chunk.iter().map(|l| l.json.len()).sum();
        assert!(chunk.len() <= TAIL_CHUNK_LINES, "{} lines", chunk.len());
        assert!(
            chunk.len() == 1 || bytes <= TAIL_CHUNK_BYTES,
            "a chunk of {} lines holds {bytes} bytes",
            chunk.len()
        );
        seen.extend(chunk.into_iter().map(|l| l.pos));
    }
    // Compared whole but reported briefly: a difference in 5 000 positions.
    let want: Vec<u64> = (0..lines.len() as u64).collect();
    let first_wrong = seen.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        seen == want,
        "{} positions seen, {} expected; first difference at index {first_wrong:?}",
        seen.len(),
        want.len()
    );
}

#[tokio::test]
async fn memory_tail_chunks_are_capped_in_bytes() {
    let store = MemoryStreamStore::new(MemoryLimits::default());
    check_tail_chunks(&store, &sid("mixed")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tail_chunks_are_capped_in_bytes_in_redis_and_in_overflow() {
    let server = RedisServer::start_new().await;
    let store = RedisStreamStore::new(
        RedisConfig {
            url: server.url(),
            block: Duration::from_millis(300),
            // The head of the stream moves to the overflow store: both read paths.
            max_lines: 1000,
            ..RedisConfig::default()
        },
        Some(Arc::new(InMemory::new())),
    )
    .unwrap();
    check_tail_chunks(&store, &sid("mixed")).await;
}
