//! Archive writes off the delivery path: messages are queued to one task
//! that appends them in batches (one SQLite transaction for everything
//! that queued meanwhile), so archiving costs a channel send per message
//! rather than a database commit before delivery. A query first waits for
//! what is queued, so a user always finds the messages they just saw.

use std::sync::{Arc, OnceLock};

use jackdaw_core::storage::{ArchiveStore, ArchivedMessage};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

/// Messages that may wait for the writer; past it senders wait
/// (backpressure rather than unbounded memory).
const QUEUE: usize = 10_000;
/// Messages written in one transaction at most.
const BATCH: usize = 1_000;

enum Command {
    Append(String, ArchivedMessage),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

pub struct ArchiveWriter {
    store: Arc<dyn ArchiveStore>,
    /// Started on first use, inside the server's runtime.
    queue: OnceLock<mpsc::Sender<Command>>,
}

impl ArchiveWriter {
    pub fn new(store: Arc<dyn ArchiveStore>) -> Self {
        Self {
            store,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> &mpsc::Sender<Command> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(self.store.clone(), rx));
            tx
        })
    }

    pub async fn append(&self, owner: &str, message: ArchivedMessage) {
        if self
            .queue()
            .send(Command::Append(owner.to_string(), message))
            .await
            .is_err()
        {
            error!("archive writer stopped: message not archived");
        }
    }

    /// Waits until everything queued so far is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue().send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(store: Arc<dyn ArchiveStore>, mut rx: mpsc::Receiver<Command>) {
    let mut batch: Vec<(String, ArchivedMessage)> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(owner, message) => batch.push((owner, message)),
                Command::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store.append_many(&batch).await {
                error!(error = %e, messages = batch.len(), "cannot archive messages");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
