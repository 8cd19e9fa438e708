//! The message phase shared by `chat` and `muc`: every session gets a
//! reader task and a writer task (so a server that stalls one direction
//! cannot stall the other), senders send at a fixed rate for the phase,
//! receivers time every message that carries our timestamp, and the phase
//! ends after a drain that waits for what is still in flight.
//!
//! Bodies are `jdl <sender> <seq> <µs since the run's epoch>`: the body is
//! the one part of a message every server delivers unchanged (a custom
//! element might be stripped by a MUC or archive), and sender and receiver
//! share the clock because both are in this process. The timestamp is
//! taken when the batch is written, so a sender held back by TCP
//! back-pressure does not count its own wait as server latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

use crate::client::{Conn, Transport, answer_iq};
use crate::probe::ServerSummary;
use crate::report::MessagesReport;
use crate::run::Run;
use crate::stats::{SharedHistogram, new_histogram, per_second, record_micros};
use crate::xml::{Frame, Scanner};

/// Most messages one sender writes in one go when it is behind schedule.
const MAX_BATCH: u64 = 64;

/// Builds the stanza for message `seq` of sender `i` with `body`.
pub type MakeStanza = Arc<dyn Fn(usize, u64, &str) -> String + Send + Sync>;

/// Counters of the phase, read live by the progress line.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub bounced: AtomicU64,
    pub dropped: AtomicU64,
    /// Microseconds since the epoch of the latest delivery.
    last_delivery: AtomicU64,
}

pub struct Plan {
    /// Messages per second per sender.
    pub rate: f64,
    pub send_for: Duration,
    pub drain: Duration,
    /// Deliveries each message should cause (1 for chat, occupants for MUC).
    pub fan_out: u64,
}

/// Lifecycle signal from the driver to every session's tasks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Run,
    /// Stop reading and writing, close the stream.
    Close,
}

/// Runs the phase on `sessions` (index, connection, sends?) and reports it,
/// with the server's figures over the sending part.
pub async fn drive(
    run: &Run,
    sessions: Vec<(usize, Conn, bool)>,
    make: MakeStanza,
    plan: Plan,
) -> (MessagesReport, Option<ServerSummary>) {
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(SharedHistogram::default());
    let (stage_tx, stage_rx) = watch::channel(Stage::Run);
    let n_sessions = sessions.len() as u64;
    let n_senders = sessions.iter().filter(|s| s.2).count() as u64;

    let progress = run.progress("traffic", {
        let c = counters.clone();
        move || {
            format!(
                "sent {} delivered {} bounced {} dropped {}",
                c.sent.load(Ordering::Relaxed),
                c.delivered.load(Ordering::Relaxed),
                c.bounced.load(Ordering::Relaxed),
                c.dropped.load(Ordering::Relaxed)
            )
        }
    });

    let epoch = run.epoch;
    let start = Instant::now();
    let send_end = start + plan.send_for;
    let mut tasks = Vec::with_capacity(sessions.len() * 2);
    for (i, conn, sends) in sessions {
        let Conn {
            io, scanner, rbuf, ..
        } = conn;
        let (rd, wr) = tokio::io::split(io);
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(read_loop(
            rd,
            scanner,
            rbuf,
            reply_tx,
            stage_rx.clone(),
            counters.clone(),
            latency.clone(),
            epoch,
        )));
        let sender = sends.then(|| Sender {
            index: i,
            rate: plan.rate,
            start,
            end: send_end,
            make: make.clone(),
        });
        tasks.push(tokio::spawn(write_loop(
            wr,
            sender,
            reply_rx,
            stage_rx.clone(),
            counters.clone(),
            epoch,
        )));
    }

    let before = run.probe.as_ref().and_then(|p| p.snapshot());
    tokio::time::sleep_until(send_end.into()).await;
    let sent_elapsed = start.elapsed();
    let after = run.probe.as_ref().and_then(|p| p.snapshot());
    // Drain: until every expected delivery arrived, or the drain time is up.
    let drain_end = Instant::now() + plan.drain;
    while Instant::now() < drain_end {
        let expected = counters.sent.load(Ordering::Relaxed) * plan.fan_out;
        let seen = counters.delivered.load(Ordering::Relaxed) + counters.bounced.load(Ordering::Relaxed);
        if seen >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stage_tx.send(Stage::Close);
    for t in tasks {
        let _ = t.await;
    }
    drop(progress);

    let sent = counters.sent.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let bounced = counters.bounced.load(Ordering::Relaxed);
    let expected = sent * plan.fan_out;
    let start_us = u64::try_from(start.duration_since(epoch).as_micros()).unwrap_or(0);
    let last_us = counters.last_delivery.load(Ordering::Relaxed);
    // Delivered per second from the first send to the last delivery, so
    // a backlog delivered during the drain counts at its real pace.
    let delivery_window = Duration::from_micros(last_us.saturating_sub(start_us)).max(sent_elapsed);
    let server = run.probe.as_ref().map(|p| p.summary(before, after));
    let report = MessagesReport {
        sessions: n_sessions,
        senders: n_senders,
        elapsed_s: sent_elapsed.as_secs_f64(),
        sent,
        delivered,
        expected,
        bounced,
        lost: expected.saturating_sub(delivered + bounced),
        sent_per_s: per_second(sent, sent_elapsed),
        delivered_per_s: if delivered == 0 {
            0.0
        } else {
            per_second(delivered, delivery_window)
        },
        dropped_sessions: counters.dropped.load(Ordering::Relaxed),
        latency: latency.summary(),
    };
    (report, server)
}

struct Sender {
    index: usize,
    rate: f64,
    start: Instant,
    end: Instant,
    make: MakeStanza,
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    mut rd: ReadHalf<Transport>,
    mut scanner: Scanner,
    mut buf: Vec<u8>,
    replies: mpsc::UnboundedSender<String>,
    mut stage: watch::Receiver<Stage>,
    counters: Arc<Counters>,
    latency: Arc<SharedHistogram>,
    epoch: Instant,
) {
    let mut hist = new_histogram();
    let mut closing = false;
    let mut close_deadline = None;
    loop {
        let read = tokio::select! {
            r = rd.read(&mut buf) => r,
            _ = stage.changed(), if !closing => {
                // Keep reading briefly so the server's close is seen.
                closing = true;
                close_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                continue;
            }
            _ = sleep_until_opt(close_deadline) => break,
        };
        let n = match read {
            Ok(n) if n > 0 => n,
            _ => {
                if !closing && *stage.borrow() == Stage::Run {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        };
        scanner.feed(&buf[..n]);
        let now_us = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut got = 0u64;
        let mut ended = false;
        loop {
            match scanner.next_frame() {
                Ok(Some(Frame::Stanza(el))) => match el.name() {
                    "message" => {
                        if el.attr("type").as_deref() == Some("error") {
                            counters.bounced.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        // Room history arrives with a delay stamp: not ours to time.
                        if el.child("delay").is_some() {
                            continue;
                        }
                        if let Some(t) = el.child("body").and_then(|b| timestamp(&b.text())) {
                            record_micros(&mut hist, now_us.saturating_sub(t));
                            got += 1;
                        }
                    }
                    "iq" => {
                        if let Some(reply) = answer_iq(&el) {
                            let _ = replies.send(reply);
                        }
                    }
                    "error" => {
                        ended = true;
                        break;
                    }
                    _ => {}
                },
                Ok(Some(Frame::End)) | Err(_) => {
                    ended = true;
                    break;
                }
                Ok(Some(Frame::Header)) => {}
                Ok(None) => break,
            }
        }
        if got > 0 {
            counters.delivered.fetch_add(got, Ordering::Relaxed);
            counters.last_delivery.fetch_max(now_us, Ordering::Relaxed);
        }
        if ended {
            // The writer may have closed our stream before this task saw
            // the stage change: the server's answer is not a drop then.
            if !closing && *stage.borrow() == Stage::Run {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            break;
        }
    }
    latency.merge(&hist);
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The timestamp of a body we sent: `jdl <sender> <seq> <µs>`.
fn timestamp(body: &str) -> Option<u64> {
    let rest = body.strip_prefix("jdl ")?;
    rest.rsplit(' ').next()?.parse().ok()
}

async fn write_loop(
    mut wr: WriteHalf<Transport>,
    sender: Option<Sender>,
    mut replies: mpsc::UnboundedReceiver<String>,
    mut stage: watch::Receiver<Stage>,
    counters: Arc<Counters>,
    epoch: Instant,
) {
    let mut out = String::with_capacity(4096);
    let mut seq = 0u64;
    let mut replies_open = true;
    // Senders start at a random point of their first interval so that
    // they do not all fire on the same tick.
    let (start, interval) = match &sender {
        Some(s) => {
            let interval = 1.0 / s.rate;
            let offset = rand::thread_rng().gen_range(0.0..interval.min(1.0));
            (s.start + Duration::from_secs_f64(offset), interval)
        }
        None => (Instant::now(), 0.0),
    };
    loop {
        out.clear();
        let mut batch = 0u64;
        let mut next_due = None;
        if let Some(s) = &sender {
            let now = Instant::now();
            if now < s.end {
                let due = if now < start {
                    0
                } else {
                    (now.duration_since(start).as_secs_f64() / interval) as u64 + 1
                };
                if due > seq {
                    let t = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                    batch = (due - seq).min(MAX_BATCH);
                    for _ in 0..batch {
                        let body = format!("jdl {} {seq} {t}", s.index);
                        out.push_str(&(s.make)(s.index, seq, &body));
                        seq += 1;
                    }
                } else {
                    next_due = Some(start + Duration::from_secs_f64(seq as f64 * interval));
                }
            }
        }
        while let Ok(r) = replies.try_recv() {
            out.push_str(&r);
        }
        if !out.is_empty() {
            let write = async {
                wr.write_all(out.as_bytes()).await?;
                wr.flush().await
            };
            let ok = tokio::select! {
                r = write => r.is_ok(),
                _ = stage.changed() => break,
            };
            if !ok {
                // The reader sees the same broken connection and counts it.
                return;
            }
            counters.sent.fetch_add(batch, Ordering::Relaxed);
            if batch > 0 {
                continue;
            }
        }
        let wake = next_due.map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = sleep_until_opt(wake) => {}
            r = replies.recv(), if replies_open => match r {
                Some(r) => {
                    if wr.write_all(r.as_bytes()).await.is_err() || wr.flush().await.is_err() {
                        return;
                    }
                }
                // The reader ended: its connection is gone or closing.
                None => replies_open = false,
            },
            _ = stage.changed() => break,
        }
    }
    // RFC 6120 §4.4: close our stream; the reader waits for the server's.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        wr.write_all(b"</stream:stream>").await?;
        wr.flush().await?;
        wr.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_timestamps_only() {
        assert_eq!(timestamp("jdl 3 17 123456"), Some(123456));
        assert_eq!(timestamp("hello"), None);
        assert_eq!(timestamp("jdl x"), None);
    }
}
