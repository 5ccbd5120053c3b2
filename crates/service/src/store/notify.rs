//! Wakes the tails of a [`RedisStreamStore`](super::redis::RedisStreamStore): one
//! pub/sub connection per store, shared by every tail it serves.
//!
//! The append and close scripts `PUBLISH` on the stream's `ctl` key name, in the same
//! atomic step that stores the lines or marks the stream closed. A tail subscribes
//! to that channel before its first read ([`Notifier::subscribe`] returns once Redis
//! has confirmed the `SUBSCRIBE`), marks the notifications seen before each read, and
//! waits for the next one when it has read everything — so an append between its read
//! and its wait still wakes it. A tail with one blocking connection of its own (the
//! design this replaces) cost Redis a client per viewer.
//!
//! Notifications are an optimisation of latency, never of correctness: a tail also
//! reads again after `block` without one, so a notification lost while the pub/sub
//! connection was down delays a line, it never loses it. After a reconnect every
//! channel is subscribed again and every tail is woken to re-read.

use super::StoreError;
use futures_util::StreamExt;
use redis::Client;
use redis::aio::{PubSubSink, PubSubStream};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long the pub/sub connection waits before reconnecting after a failure.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The store's pub/sub connection and the tails waiting on it.
pub(crate) struct Notifier {
    /// The nodes it may listen on, tried in turn: one server, or a cluster's seed
    /// nodes (a cluster passes every `PUBLISH` to every node, so any one will do).
    clients: Arc<[Client]>,
    shared: Arc<Shared>,
    /// Commands to the connection's task, started by the first tail.
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

/// What the task and the tails share: one wake-up counter per watched channel.
struct Shared {
    channels: Mutex<HashMap<String, Channel>>,
}

struct Channel {
    woken: watch::Sender<u64>,
    tails: usize,
}

enum Command {
    /// Subscribe (if not yet) and answer once Redis confirmed it.
    Subscribe(String, oneshot::Sender<Result<(), String>>),
    /// The last tail of a channel is gone.
    Unsubscribe(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps are updated in single steps; a panic elsewhere cannot leave them torn.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Notifier {
    /// A notifier listening on the first of `clients` that answers (their servers'
    /// TLS settings included). Connects on first use.
    pub(crate) fn new(clients: Vec<Client>) -> Self {
        Notifier {
            clients: clients.into(),
            shared: Arc::new(Shared {
                channels: Mutex::new(HashMap::new()),
            }),
            commands: Mutex::new(None),
        }
    }

    /// Subscribes a tail to `channel`; returns once notifications on it reach this
    /// process. `Unavailable` when Redis cannot be reached.
    pub(crate) async fn subscribe(&self, channel: String) -> Result<Subscription, StoreError> {
        let woken = {
            let mut channels = lock(&self.shared.channels);
            let entry = channels.entry(channel.clone()).or_insert_with(|| Channel {
                woken: watch::Sender::new(0),
                tails: 0,
            });
            entry.tails += 1;
            entry.woken.subscribe()
        };
        let commands = self.commands();
        // Built before waiting, so an error below still releases the tail's place.
        let subscription = Subscription {
            channel: channel.clone(),
            woken,
            shared: self.shared.clone(),
            commands: commands.clone(),
        };
        let (ack, acked) = oneshot::channel();
        commands
            .send(Command::Subscribe(channel, ack))
            .map_err(|_| StoreError::Unavailable("redis notifier stopped".into()))?;
        match acked.await {
            Ok(Ok(())) => Ok(subscription),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("redis unavailable: {e}"))),
            Err(_) => Err(StoreError::Unavailable("redis notifier stopped".into())),
        }
    }

    /// The command channel of the connection's task, starting it if needed.
    fn commands(&self) -> mpsc::UnboundedSender<Command> {
        let mut commands = lock(&self.commands);
        if let Some(tx) = commands.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(self.clients.clone(), self.shared.clone(), rx));
        *commands = Some(tx.clone());
        tx
    }
}

/// One tail's subscription; unsubscribes (when it was the channel's last) on drop.
pub(crate) struct Subscription {
    channel: String,
    woken: watch::Receiver<u64>,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// Marks every notification so far as seen: call right before reading the stream.
    pub(crate) fn mark_seen(&mut self) {
        self.woken.borrow_and_update();
    }

    /// Waits until a notification arrives after the last [`mark_seen`](Self::mark_seen),
    /// or `limit` passes.
    pub(crate) async fn wait(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.woken.changed()).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = lock(&self.shared.channels);
        if let Some(entry) = channels.get_mut(&self.channel) {
            entry.tails = entry.tails.saturating_sub(1);
            if entry.tails == 0 {
                channels.remove(&self.channel);
                let _ = self
                    .commands
                    .send(Command::Unsubscribe(self.channel.clone()));
            }
        }
    }
}

/// Wakes every tail: after a reconnect, notifications may have been missed.
fn wake_all(shared: &Shared) {
    for entry in lock(&shared.channels).values() {
        entry.woken.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A pub/sub connection subscribed to every channel tails wait on now, to the first
/// node that answers, starting at `clients[*at]`; `at` is left on that node.
async fn connect(
    clients: &[Client],
    at: &mut usize,
    shared: &Shared,
) -> Result<(PubSubSink, PubSubStream, HashSet<String>), String> {
    let mut last_error = String::from("no Redis node to listen on");
    for _ in 0..clients.len() {
        let Some(client) = clients.get(*at) else {
            *at = 0;
            continue;
        };
        match connect_to(client, shared).await {
            Ok(connected) => return Ok(connected),
            Err(e) => {
                last_error = e;
                *at = (*at + 1) % clients.len();
            }
        }
    }
    Err(last_error)
}

async fn connect_to(
    client: &Client,
    shared: &Shared,
) -> Result<(PubSubSink, PubSubStream, HashSet<String>), String> {
    let (mut sink, stream) = client
        .get_async_pubsub()
        .await
        .map_err(|e| e.to_string())?
        .split();
    let wanted: Vec<String> = lock(&shared.channels).keys().cloned().collect();
    if !wanted.is_empty() {
        sink.subscribe(&wanted).await.map_err(|e| e.to_string())?;
    }
    Ok((sink, stream, wanted.into_iter().collect()))
}

/// The connection's task: (re)connects, follows subscribe/unsubscribe commands in
/// order, and turns each message into a wake-up of its channel's tails. Ends when
/// the notifier is dropped.
async fn run(
    clients: Arc<[Client]>,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    // The subscribe waiting for a connection, if any.
    let mut pending: Option<(String, oneshot::Sender<Result<(), String>>)> = None;
    // The node listened on: after a broken connection the next one is tried first.
    let mut at = 0;
    loop {
        if pending.is_none() && lock(&shared.channels).is_empty() {
            // Nobody to wake: connect only when a tail asks.
            match commands.recv().await {
                None => return,
                Some(Command::Unsubscribe(_)) => continue,
                Some(Command::Subscribe(channel, ack)) => pending = Some((channel, ack)),
            }
        }
        let (mut sink, mut stream, mut subscribed) = match connect(&clients, &mut at, &shared).await
        {
            Ok(connected) => connected,
            Err(e) => {
                // Every tail asking now gets the error (and ends; its client resumes).
                if let Some((_, ack)) = pending.take() {
                    let _ = ack.send(Err(e.clone()));
                }
                while let Ok(command) = commands.try_recv() {
                    if let Command::Subscribe(_, ack) = command {
                        let _ = ack.send(Err(e.clone()));
                    }
                }
                // Tails already waiting read on their timers; try again for them.
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
        };
        wake_all(&shared);
        if let Some((_, ack)) = pending.take() {
            // `connect` subscribed every channel in the map, this one included (its
            // tail registered before asking); one whose tail left meanwhile is moot.
            let _ = ack.send(Ok(()));
        }
        // Connected: serve commands and messages until the connection breaks.
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(channel, ack)) => {
                        if subscribed.contains(&channel) {
                            let _ = ack.send(Ok(()));
                        } else if let Err(e) = sink.subscribe(&channel).await {
                            let _ = ack.send(Err(e.to_string()));
                            break;
                        } else {
                            subscribed.insert(channel);
                            let _ = ack.send(Ok(()));
                        }
                    }
                    Some(Command::Unsubscribe(channel)) => {
                        // Skipped if a new tail took the channel up again meanwhile.
                        let watched = lock(&shared.channels).contains_key(&channel);
                        if !watched && subscribed.remove(&channel) && sink.unsubscribe(&channel).await.is_err() {
                            break;
                        }
                    }
                },
                message = stream.next() => match message {
                    Some(message) => {
                        if let Some(entry) = lock(&shared.channels).get(message.get_channel_name()) {
                            entry.woken.send_modify(|n| *n = n.wrapping_add(1));
                        }
                    }
                    None => break,
                },
            }
        }
        // The connection broke: tails keep reading on their timer until it is back,
        // on another node when there is one (this one may be down).
        at = (at + 1) % clients.len().max(1);
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}
