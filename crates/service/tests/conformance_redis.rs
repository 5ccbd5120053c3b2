//! Promises only the Redis stream store makes, beyond the shared contract: bounded
//! length with the overflow moved to object storage (not lost), expiry of abandoned
//! streams, and outages that surface as `Unavailable` and heal by themselves.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use runlog_protocol::{AccountId, StreamKey};
use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
use runlog_service::store::{StoreError, StoredLine, StreamId, StreamStore, TailItem};
use runlog_testkit::redis::{RedisCluster, RedisServer};
use std::sync::Arc;
use std::time::Duration;

fn sid(key: &str) -> StreamId {
    StreamId {
        account: AccountId::new("acc").unwrap(),
        key: StreamKey::new(key).unwrap(),
    }
}

fn lines(range: std::ops::Range<u64>) -> Vec<StoredLine> {
    range
        .map(|pos| StoredLine {
            pos,
            json: Bytes::from(format!(r#"{{"pos":{pos},"out":"line {pos}\n"}}"#)),
        })
        .collect()
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        url: server.url(),
        block: Duration::from_millis(300),
        ..RedisConfig::default()
    }
}

/// A store whose tails read again only every 30 s without a notification: a tail
/// that wakes sooner was woken by Redis.
fn slow_timer_store(server: &RedisServer) -> RedisStreamStore {
    RedisStreamStore::new(
        RedisConfig {
            block: Duration::from_secs(30),
            ..config(server)
        },
        None,
    )
    .unwrap()
}

async fn redis_lines_held(server: &RedisServer, id: &StreamId) -> u64 {
    let key = format!("runlog:{{{}}}:s:{}:lines", id.account, id.key);
    server.int_command(&format!("XLEN {key}")).await as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_stream_moves_its_head_to_the_overflow_store_and_still_reads_whole() {
    let server = RedisServer::start_new().await;
    let overflow = Arc::new(InMemory::new());
    let store = RedisStreamStore::new(
        RedisConfig {
            max_lines: 100,
            ..config(&server)
        },
        Some(overflow.clone()),
    )
    .unwrap();
    let id = sid("long/run");
    store.open(&id).await.unwrap();
    for start in (0..1000).step_by(50) {
        store.append(&id, lines(start..start + 50)).await.unwrap();
    }
    let held = redis_lines_held(&server, &id).await;
    assert!(
        held <= 150,
        "Redis holds {held} lines of a stream capped at 100"
    );
    let segments = overflow
        .list(None)
        .map(|m| m.unwrap())
        .collect::<Vec<_>>()
        .await;
    assert!(!segments.is_empty(), "the head went to the overflow store");
    assert!(
        segments
            .iter()
            .all(|m| m.location.as_ref().starts_with("acc/long/run/+")),
        "{segments:?}"
    );

    let all = store.read(&id, 0, 5000).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..1000).collect::<Vec<_>>()
    );
    assert_eq!(
        all[7],
        lines(7..8)[0],
        "moved lines are served byte for byte"
    );
    let middle = store.read(&id, 120, 30).await.unwrap();
    assert_eq!(
        middle.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (120..150).collect::<Vec<_>>()
    );

    let retry = store.append(&id, lines(0..50)).await.unwrap();
    assert_eq!(
        (retry.appended, retry.duplicates),
        (0, 50),
        "a retry of moved lines is a duplicate"
    );
    let meta = store.meta(&id).await.unwrap();
    assert_eq!((meta.lines, meta.last_contiguous_pos), (1000, Some(999)));

    store.close(&id).await.unwrap();
    let mut tail = store.tail(&id, 0).await.unwrap();
    let mut seen = Vec::new();
    while let Some(item) = tail.next().await {
        match item.unwrap() {
            TailItem::Lines(batch) => seen.extend(batch.into_iter().map(|l| l.pos)),
            TailItem::Eof => break,
        }
    }
    assert_eq!(
        seen,
        (0..1000).collect::<Vec<_>>(),
        "a tail from 0 crosses the overflow boundary"
    );

    store.remove(&id).await.unwrap();
    let left = overflow.list(None).collect::<Vec<_>>().await;
    assert!(left.is_empty(), "remove deletes the overflow segments too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_overflow_store_a_stream_past_twice_its_cap_refuses_lines() {
    let server = RedisServer::start_new().await;
    let store = RedisStreamStore::new(
        RedisConfig {
            max_lines: 100,
            ..config(&server)
        },
        None,
    )
    .unwrap();
    let id = sid("bounded");
    store.open(&id).await.unwrap();
    store.append(&id, lines(0..200)).await.unwrap();
    let err = store.append(&id, lines(200..201)).await.unwrap_err();
    assert!(matches!(err, StoreError::LimitExceeded(_)), "{err:?}");
    assert_eq!(
        store.read(&id, 0, 1000).await.unwrap().len(),
        200,
        "nothing stored is dropped"
    );
    let retry = store.append(&id, vec![]).await.unwrap();
    assert_eq!(
        retry.next_pos, 200,
        "an empty append still reports the position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_stream_expires_and_leaves_the_listing() {
    let server = RedisServer::start_new().await;
    let store = RedisStreamStore::new(
        RedisConfig {
            ttl: Duration::from_millis(300),
            ..config(&server)
        },
        None,
    )
    .unwrap();
    let id = sid("abandoned");
    store.open(&id).await.unwrap();
    store.append(&id, lines(0..3)).await.unwrap();
    assert_eq!(store.list(&id.account).await.unwrap().len(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.meta(&id).await != Err(StoreError::NotFound) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = sid("fresh");
    store.open(&other).await.unwrap();
    let listed = store.list(&id.account).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.id.key.as_str()).collect::<Vec<_>>(),
        vec!["fresh"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_keeps_a_stream_alive_past_its_ttl() {
    let server = RedisServer::start_new().await;
    let ttl = Duration::from_millis(400);
    let store = RedisStreamStore::new(
        RedisConfig {
            ttl,
            ..config(&server)
        },
        None,
    )
    .unwrap();
    let id = sid("busy");
    store.open(&id).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut pos = 0;
    // Appends every 100 ms for three TTLs: each one refreshes the expiry.
    while started.elapsed() < ttl * 3 {
        store.append(&id, lines(pos..pos + 1)).await.unwrap();
        pos += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.meta(&id).await.unwrap().lines, pos);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_the_store_heals_after_restart() {
    let mut server = RedisServer::start_new().await;
    let store = RedisStreamStore::new(config(&server), None).unwrap();
    let id = sid("outage");
    store.open(&id).await.unwrap();
    store.append(&id, lines(0..10)).await.unwrap();
    server.stop().await;
    assert!(matches!(
        store.append(&id, lines(10..20)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.health().await,
        Err(StoreError::Unavailable(_))
    ));
    server.start().await;
    // The first command after the restart already succeeds (reconnect + script reload).
    let ack = store.append(&id, lines(5..20)).await.unwrap();
    assert_eq!(
        (ack.appended, ack.duplicates, ack.next_pos),
        (10, 5, 20),
        "data survived the restart"
    );
    store.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_tail_wakes_on_append_and_close_from_another_replica() {
    let server = RedisServer::start_new().await;
    // A long block time: the tail must be woken by a notification, not by its timer.
    let slow = RedisConfig {
        block: Duration::from_secs(30),
        ..config(&server)
    };
    let reader = RedisStreamStore::new(slow.clone(), None).unwrap();
    let writer = RedisStreamStore::new(slow, None).unwrap();
    let id = sid("wake");
    writer.open(&id).await.unwrap();
    writer.append(&id, lines(0..1)).await.unwrap();
    let mut tail = reader.tail(&id, 0).await.unwrap();
    let first = tail.next().await;
    assert!(
        matches!(first, Some(Ok(TailItem::Lines(ref l))) if l.len() == 1),
        "{first:?}"
    );
    let next = tokio::spawn(async move { (tail.next().await, tail.next().await) });
    // The tail listens on its stream's channel (it subscribed before its first read).
    let numsub = server
        .raw_command("PUBSUB NUMSUB runlog:{acc}:s:wake:ctl")
        .await
        .unwrap();
    assert!(numsub.contains(":1\r\n"), "one subscriber: {numsub:?}");
    let started = tokio::time::Instant::now();
    writer.append(&id, lines(1..2)).await.unwrap();
    writer.close(&id).await.unwrap();
    let (second, third) = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(second, Some(Ok(TailItem::Lines(ref l))) if l[0].pos == 1),
        "{second:?}"
    );
    assert!(matches!(third, Some(Ok(TailItem::Eof))), "{third:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by Redis, not by the 30 s block timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_tail_is_woken_again_after_redis_restarts() {
    let mut server = RedisServer::start_new().await;
    let store = slow_timer_store(&server);
    let id = sid("restart/tail");
    store.open(&id).await.unwrap();
    store.append(&id, lines(0..1)).await.unwrap();
    let mut tail = store.tail(&id, 0).await.unwrap();
    assert!(matches!(tail.next().await, Some(Ok(TailItem::Lines(_)))));
    let next = tokio::spawn(async move { tail.next().await });
    server.restart().await;
    // The store subscribes again by itself once Redis is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let numsub = server
            .raw_command("PUBSUB NUMSUB runlog:{acc}:s:restart/tail:ctl")
            .await
            .unwrap();
        if numsub.contains(":1\r\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not subscribed again: {numsub:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.append(&id, lines(1..2)).await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("woken by the append, not by the 30 s timer")
        .unwrap();
    assert!(
        matches!(woken, Some(Ok(TailItem::Lines(ref l))) if l[0].pos == 1),
        "{woken:?}"
    );
}

/// Clients connected to `server`, the asking one excluded.
async fn clients(server: &RedisServer) -> usize {
    let list = server.raw_command("CLIENT LIST").await.unwrap();
    list.lines().filter(|l| l.starts_with("id=")).count() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_share_one_connection_and_each_is_woken() {
    const TAILS: u64 = 20;
    let server = RedisServer::start_new().await;
    let store = slow_timer_store(&server);
    let mut waiting = Vec::new();
    for t in 0..TAILS {
        let id = sid(&format!("many/{t}"));
        store.open(&id).await.unwrap();
        store.append(&id, lines(0..1)).await.unwrap();
        let mut tail = store.tail(&id, 0).await.unwrap();
        assert!(matches!(tail.next().await, Some(Ok(TailItem::Lines(_)))));
        waiting.push(tokio::spawn(async move {
            (tail.next().await, tail.next().await)
        }));
    }
    // The store's shared connection and one pub/sub connection, whatever the number
    // of tails (a connection per tail before).
    let connected = clients(&server).await;
    assert!(connected <= 2, "{connected} connections for {TAILS} tails");
    for t in 0..TAILS {
        let id = sid(&format!("many/{t}"));
        store.append(&id, lines(1..2)).await.unwrap();
        store.close(&id).await.unwrap();
    }
    for w in waiting {
        let (lines, end) = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("woken by its notification, not its 30 s timer")
            .unwrap();
        assert!(
            matches!(lines, Some(Ok(TailItem::Lines(ref l))) if l[0].pos == 1),
            "{lines:?}"
        );
        assert!(matches!(end, Some(Ok(TailItem::Eof))), "{end:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_bounded_by_bytes_as_well_as_by_count() {
    let server = RedisServer::start_new().await;
    let overflow = Arc::new(InMemory::new());
    let capped = RedisConfig {
        max_bytes: 20_000,
        ..config(&server)
    };
    let big = |range: std::ops::Range<u64>| -> Vec<StoredLine> {
        range
            .map(|pos| StoredLine {
                pos,
                json: Bytes::from(format!(r#"{{"pos":{pos},"out":"{}"}}"#, "y".repeat(1000))),
            })
            .collect()
    };
    let store = RedisStreamStore::new(capped.clone(), Some(overflow.clone())).unwrap();
    let id = sid("wide");
    store.open(&id).await.unwrap();
    for start in (0..200).step_by(10) {
        store.append(&id, big(start..start + 10)).await.unwrap();
    }
    let held = redis_lines_held(&server, &id).await;
    assert!(
        held * 1000 <= 40_000,
        "Redis holds {held} lines of 1 kB under a 20 kB cap"
    );
    let all = store.read(&id, 0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );

    let bounded = RedisStreamStore::new(capped, None).unwrap();
    let id = sid("wide-no-overflow");
    bounded.open(&id).await.unwrap();
    let mut refused = None;
    for start in (0..200).step_by(10) {
        if let Err(e) = bounded.append(&id, big(start..start + 10)).await {
            refused = Some((start, e));
            break;
        }
    }
    let (at, err) = refused.expect("a byte-capped stream without overflow store refuses lines");
    assert!(matches!(err, StoreError::LimitExceeded(_)), "{err:?}");
    assert!(
        (40..=50).contains(&at),
        "refused once twice the byte cap is held, at line {at}"
    );
}

/// An account whose keys are on none of `cluster`'s first node's slots (it holds the
/// first third of them).
async fn account_off_the_first_node(cluster: &RedisCluster) -> String {
    for i in 0..100 {
        let name = format!("elsewhere-{i}");
        if RedisCluster::primary_of(cluster.slot(&name).await) != 0 {
            return name;
        }
    }
    panic!("no account outside the first node's slots");
}

/// A writer store and a reader store on `cluster`, as two replicas hold them; tails
/// read again every `block` without a notification.
fn cluster_stores(cluster: &RedisCluster, block: Duration) -> (RedisStreamStore, RedisStreamStore) {
    let config = RedisConfig {
        url: cluster.urls(),
        cluster: true,
        block,
        ..RedisConfig::default()
    };
    let writer = RedisStreamStore::new(config.clone(), None).unwrap();
    let reader = RedisStreamStore::new(config, None).unwrap();
    (writer, reader)
}

/// Reads `tail` to its end into `seen`; any error fails the test, saying `when`.
async fn read_to_eof(
    tail: &mut futures_util::stream::BoxStream<'static, Result<TailItem, StoreError>>,
    seen: &mut Vec<u64>,
    when: &str,
) {
    loop {
        match tail.next().await {
            Some(Ok(TailItem::Lines(l))) => seen.extend(l.iter().map(|l| l.pos)),
            Some(Ok(TailItem::Eof)) => return,
            other => panic!("{when}: {other:?}"),
        }
    }
}

/// A tail on a cluster store with a 30 s read timer (so only a notification wakes it
/// sooner), past the stream's first line; and a writer store beside it.
async fn cluster_tail(
    cluster: &RedisCluster,
    id: &StreamId,
) -> (
    RedisStreamStore,
    tokio::task::JoinHandle<Option<Result<TailItem, StoreError>>>,
) {
    let (writer, reader) = cluster_stores(cluster, Duration::from_secs(30));
    writer.open(id).await.unwrap();
    writer.append(id, lines(0..1)).await.unwrap();
    let mut tail = reader.tail(id, 0).await.unwrap();
    let first = tail.next().await;
    assert!(
        matches!(first, Some(Ok(TailItem::Lines(ref l))) if l.len() == 1),
        "{first:?}"
    );
    // Subscribed before its first read: the next item waits for a notification.
    (writer, tokio::spawn(async move { tail.next().await }))
}

async fn assert_woken_by_append(
    writer: &RedisStreamStore,
    id: &StreamId,
    next: tokio::task::JoinHandle<Option<Result<TailItem, StoreError>>>,
) {
    writer.append(id, lines(1..2)).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("woken by the cluster's PUBLISH, not by the 30 s read timer")
        .unwrap();
    assert!(
        matches!(second, Some(Ok(TailItem::Lines(ref l))) if l[0].pos == 1),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_tail_listens_on_the_node_that_owns_its_stream() {
    let cluster = RedisCluster::start_new().await;
    // An account on the second or third node: the tail must not listen on the first
    // (the seed), where the append's PUBLISH would only arrive over the cluster bus.
    let account = account_off_the_first_node(&cluster).await;
    let id = StreamId {
        account: AccountId::new(account.as_str()).unwrap(),
        key: StreamKey::new("wake").unwrap(),
    };
    let (writer, next) = cluster_tail(&cluster, &id).await;
    let channel = format!("runlog:{{{account}}}:s:wake:ctl");
    let mut counts = Vec::new();
    for node in cluster.nodes() {
        counts.push(node.int_command(&format!("PUBSUB NUMSUB {channel}")).await);
    }
    let slot = cluster.slot(&channel).await;
    let owner = RedisCluster::primary_of(slot);
    let mut want = vec![0; 3];
    want[owner] = 1;
    assert_eq!(counts, want, "subscribers per node; slot {slot}");
    assert_woken_by_append(&writer, &id, next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_tails_are_woken_while_the_first_node_is_down() {
    let mut cluster = RedisCluster::start_new().await;
    let account = account_off_the_first_node(&cluster).await;
    cluster.stop_node(0).await;
    let id = StreamId {
        account: AccountId::new(account.as_str()).unwrap(),
        key: StreamKey::new("wake").unwrap(),
    };
    // The notifier finds the first seed node down and listens on the next.
    let (writer, next) = cluster_tail(&cluster, &id).await;
    assert_woken_by_append(&writer, &id, next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_are_refused_without_cluster_mode() {
    let err = RedisStreamStore::new(
        RedisConfig {
            url: "redis://127.0.0.1:7000/,redis://127.0.0.1:7001/".to_owned(),
            ..RedisConfig::default()
        },
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("cluster"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_replica_takes_over_a_failed_primary_and_the_stream_goes_on() {
    let mut cluster = RedisCluster::start_with_replicas().await;
    let (writer, reader) = cluster_stores(&cluster, Duration::from_millis(300));
    let id = sid("failover");
    writer.open(&id).await.unwrap();
    writer.append(&id, lines(0..100)).await.unwrap();
    let mut tail = reader.tail(&id, 0).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 100 {
        match tail.next().await {
            Some(Ok(TailItem::Lines(l))) => seen.extend(l.iter().map(|l| l.pos)),
            other => panic!("before the failover: {other:?}"),
        }
    }
    // Everything written so far has reached the replicas (a line a replica lacks when
    // its primary dies is lost with it: Redis replicates asynchronously).
    cluster.wait_replicated().await;
    let owner = RedisCluster::primary_of(cluster.slot("{acc}").await);
    cluster.stop_node(owner).await;
    cluster.wait_promoted(3 + owner).await;

    // The store finds the new primary by itself: no error reaches the caller.
    writer.append(&id, lines(100..200)).await.unwrap();
    writer.close(&id).await.unwrap();
    let all = writer.read(&id, 0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    // The tail, subscribed on the failed node, still gets every line and the end.
    let rest = read_to_eof(&mut tail, &mut seen, "after the failover");
    tokio::time::timeout(Duration::from_secs(30), rest)
        .await
        .expect("the tail ended within 30 s");
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_stream_keeps_every_line_while_its_slot_moves_to_another_node() {
    let cluster = RedisCluster::start_new().await;
    let (writer, reader) = cluster_stores(&cluster, Duration::from_millis(300));
    let writer = Arc::new(writer);
    // Other streams of the account, in the same slot: the slot's keys move one by one,
    // so there are enough of them for the writer below to meet the slot half-moved.
    for i in 0..150 {
        let other = sid(&format!("other-{i}"));
        writer.open(&other).await.unwrap();
        writer.append(&other, lines(0..1)).await.unwrap();
    }
    let id = sid("moving");
    writer.open(&id).await.unwrap();
    writer.append(&id, lines(0..10)).await.unwrap();
    let mut tail = reader.tail(&id, 0).await.unwrap();
    let reading = tokio::spawn(async move {
        let mut seen = Vec::new();
        read_to_eof(&mut tail, &mut seen, "tail while the slot moved").await;
        seen
    });
    // A writer appends batch after batch until the slot has moved (so its scripts meet
    // the slot half-migrated: ASK, TRYAGAIN), then once more on the new owner.
    let moved = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appending = tokio::spawn({
        let (writer, id, moved) = (writer.clone(), id.clone(), moved.clone());
        async move {
            let mut next = 10;
            while !moved.load(std::sync::atomic::Ordering::SeqCst) {
                writer
                    .append(&id, lines(next..next + 10))
                    .await
                    .expect("append while the slot moves");
                next += 10;
            }
            next
        }
    });
    let slot = cluster.slot("{acc}").await;
    let owner = RedisCluster::primary_of(slot);
    let target = (owner + 1) % 3;
    cluster.move_slot(slot, owner, target).await;
    moved.store(true, std::sync::atomic::Ordering::SeqCst);
    let next = appending.await.unwrap();
    writer.append(&id, lines(next..next + 10)).await.unwrap();
    writer.close(&id).await.unwrap();
    assert!(next > 10, "no append ran while the slot moved");
    let n = next + 10;
    let stored = writer.read(&id, 0, n as usize + 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    let seen = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the tail ended within 30 s")
        .unwrap();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    let key = "runlog:{acc}:s:moving:lines";
    assert_eq!(
        cluster.nodes()[target]
            .int_command(&format!("EXISTS {key}"))
            .await,
        1,
        "the stream's lines are not on the slot's new owner"
    );
}

/// An overflow store whose first `put` waits until released: a mover that stalls in
/// its segment write for longer than its lock lives.
#[derive(Debug)]
struct FirstPutStalls {
    inner: Arc<InMemory>,
    entered: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl std::fmt::Display for FirstPutStalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirstPutStalls({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FirstPutStalls {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let release = self.release.lock().await.take();
        if let Some(release) = release {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                let _ = entered.send(());
            }
            let _ = release.await;
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
    {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
    {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_that_outlives_its_lock_never_overwrites_a_newer_move() {
    let server = RedisServer::start_new().await;
    let shared = Arc::new(InMemory::new());
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    let stalling = Arc::new(FirstPutStalls {
        inner: shared.clone(),
        entered: std::sync::Mutex::new(Some(entered_tx)),
        release: tokio::sync::Mutex::new(Some(release_rx)),
    });
    let capped = RedisConfig {
        max_lines: 10,
        ..config(&server)
    };
    let a = Arc::new(RedisStreamStore::new(capped.clone(), Some(stalling)).unwrap());
    let b = RedisStreamStore::new(capped, Some(shared.clone())).unwrap();
    let id = sid("stalled/mover");
    a.open(&id).await.unwrap();
    // A's append goes over the cap; its move stalls in the segment write.
    let first = tokio::spawn({
        let (a, id) = (a.clone(), id.clone());
        async move { a.append(&id, lines(0..12)).await }
    });
    entered.await.unwrap();
    // A's lock expires meanwhile; B moves the head, further than A would have.
    server
        .int_command(&format!("DEL runlog:{{{}}}:s:{}:trim", id.account, id.key))
        .await;
    b.append(&id, lines(12..40)).await.unwrap();
    // A's write goes through at last.
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    let all = b.read(&id, 0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    // And the next moves go on from where B left the mark.
    b.append(&id, lines(40..80)).await.unwrap();
    let all = a.read(&id, 0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..80).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_left_by_an_earlier_stream_of_the_key_is_replaced_not_taken_over() {
    use object_store::ObjectStoreExt as _;
    let server = RedisServer::start_new().await;
    let overflow = Arc::new(InMemory::new());
    let store = RedisStreamStore::new(
        RedisConfig {
            max_lines: 10,
            ..config(&server)
        },
        Some(overflow.clone()),
    )
    .unwrap();
    let id = sid("reused/key");
    // What an earlier stream of this key left when its removal failed half-way:
    // lines that are not this stream's (they do not start at its mark).
    let stale: String = (500..505)
        .map(|pos| format!("{{\"pos\":{pos},\"out\":\"old {pos}\\n\"}}\n"))
        .collect();
    overflow
        .put(
            &format!("acc/reused/key/+{:020}.ndjson", 0).into(),
            stale.into_bytes().into(),
        )
        .await
        .unwrap();
    store.open(&id).await.unwrap();
    for start in (0..100).step_by(20) {
        store.append(&id, lines(start..start + 20)).await.unwrap();
    }
    let all = store.read(&id, 0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    assert_eq!(all, lines(0..100), "every line is this stream's own");
}
