//! `idle`: every user logs in and the sessions are held for `--duration`
//! seconds doing nothing but answering the server's pings, then all close.
//! With `--server-pid` the server's RSS is read before the first login,
//! at hold (after `--settle` seconds) and after every session closed (after
//! `--settle` again): RSS per session = (hold − before) / sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;

use crate::cli::IdleArgs;
use crate::client::{Conn, Step, answer_iq};
use crate::report::{IdleReport, Report};
use crate::run::Run;
use crate::xml::Frame;

pub async fn run(run: &Run, args: &IdleArgs, report: &mut Report) -> anyhow::Result<()> {
    let settle = Duration::from_secs_f64(args.settle.max(0.0));
    let before = run.probe.as_ref().and_then(|p| p.snapshot());
    let phase = run.login_all(run.users.len() as u64).await;
    report.login = super::login_report(&phase);
    let conns: Vec<Conn> = phase.conns.into_iter().flatten().collect();
    let sessions = conns.len() as u64;
    if sessions == 0 {
        anyhow::bail!(
            "no session could be opened: {}",
            crate::report::reasons(&report.login.failures)
        );
    }

    let dropped = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = Vec::with_capacity(conns.len());
    for conn in conns {
        holders.push(tokio::spawn(hold(conn, stop_rx.clone(), dropped.clone())));
    }
    let progress = run.progress("idle", {
        let d = dropped.clone();
        move || {
            format!(
                "holding {} sessions, dropped {}",
                sessions,
                d.load(Ordering::Relaxed)
            )
        }
    });
    let hold_start = Instant::now();
    tokio::time::sleep(settle.min(run.duration())).await;
    let at_hold = run.probe.as_ref().and_then(|p| p.snapshot());
    tokio::time::sleep_until((hold_start + run.duration()).into()).await;
    let held = hold_start.elapsed();
    let end_of_hold = run.probe.as_ref().and_then(|p| p.snapshot());
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    drop(progress);
    tokio::time::sleep(settle).await;
    let after = run.probe.as_ref().and_then(|p| p.snapshot());

    let rss_per_session_kib = match (before, at_hold) {
        (Some(b), Some(h)) => Some((h.rss_kib as f64 - b.rss_kib as f64) / sessions as f64),
        _ => None,
    };
    report.idle = Some(IdleReport {
        sessions,
        held_s: held.as_secs_f64(),
        dropped_sessions: dropped.load(Ordering::Relaxed),
        rss_before_kib: before.map(|s| s.rss_kib),
        rss_hold_kib: at_hold.map(|s| s.rss_kib),
        rss_after_kib: after.map(|s| s.rss_kib),
        rss_per_session_kib,
    });
    report.server = run.probe.as_ref().map(|p| p.summary(at_hold, end_of_hold));
    Ok(())
}

/// Holds one session: answers pings, notices a close, and closes the
/// stream when told to.
async fn hold(mut conn: Conn, mut stop: watch::Receiver<bool>, dropped: Arc<AtomicU64>) {
    // Thousands of these may be held: give back the login's buffer growth.
    conn.scanner.shrink();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = conn.read_some(Step::Session) => {
                if r.is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let mut replies = Vec::new();
                let mut ended = false;
                loop {
                    match conn.scanner.next_frame() {
                        Ok(Some(Frame::Stanza(el))) => {
                            if el.name() == "error" {
                                ended = true;
                                break;
                            }
                            if let Some(r) = answer_iq(&el) {
                                replies.push(r);
                            }
                        }
                        Ok(Some(Frame::End)) | Err(_) => {
                            ended = true;
                            break;
                        }
                        Ok(Some(Frame::Header)) => {}
                        Ok(None) => break,
                    }
                }
                if ended {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    let _ = conn.io.shutdown().await;
                    return;
                }
                for r in replies {
                    if conn.send(Step::Session, &r).await.is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }
    conn.close(Duration::from_secs(5)).await;
}
