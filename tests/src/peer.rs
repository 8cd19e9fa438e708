//! Third-party peers: scripts in `tests/peers/` run as child processes.
//!
//! A [`Peer`] collects its stdout and stderr into one transcript (lines
//! prefixed `out|` and `err|`, in arrival order) and hands stdout lines to
//! [`Peer::expect_line`]. The transcript is printed if a test panics while the
//! peer is alive, and the process is killed when the `Peer` is dropped.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::workspace_root;

/// `$JACKDAW_PYTHON`, else `<workspace>/.venv/bin/python` (made by `scripts/test`).
pub fn python() -> PathBuf {
    std::env::var_os("JACKDAW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// `tests/peers/<name>`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers").join(name)
}

/// A running peer process.
pub struct Peer {
    name: String,
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    transcript: Arc<Mutex<String>>,
    collectors: Vec<JoinHandle<()>>,
}

impl Peer {
    /// Runs `tests/peers/<script>` with [`python()`] and `args`.
    pub fn python(script_name: &str, args: &[&str]) -> Peer {
        let python = python();
        assert!(
            python.exists(),
            "{} does not exist: set JACKDAW_PYTHON to a Python with slixmpp, or run scripts/test",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(script(script_name))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {script_name}: {e}", python.display()));

        let transcript = Arc::new(Mutex::new(String::new()));
        let (lines, stdout) = mpsc::unbounded_channel();
        let collectors = vec![
            collect(
                child.stdout.take().expect("piped stdout"),
                "out",
                transcript.clone(),
                Some(lines),
            ),
            collect(
                child.stderr.take().expect("piped stderr"),
                "err",
                transcript.clone(),
                None,
            ),
        ];
        Peer {
            name: script_name.to_owned(),
            child,
            stdout,
            transcript,
            collectors,
        }
    }

    /// Waits until the peer prints `wanted` as a whole stdout line; panics
    /// (showing the transcript) on timeout or if stdout closes first.
    pub async fn expect_line(&mut self, wanted: &str, timeout: Duration) {
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = self.stdout.recv().await {
                if line == wanted {
                    return true;
                }
            }
            false
        })
        .await;
        match found {
            Ok(true) => {}
            Ok(false) => panic!("{} closed stdout without printing {wanted:?}", self.name),
            Err(_) => panic!("{} did not print {wanted:?} within {timeout:?}", self.name),
        }
    }

    /// Everything the peer printed so far.
    pub fn transcript(&self) -> String {
        self.transcript.lock().expect("transcript lock").clone()
    }

    /// Waits for the peer to exit on its own and for its output to be read,
    /// and returns its status.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name)),
            Err(_) => panic!("{} did not exit within {timeout:?}", self.name),
        };
        for collector in self.collectors.drain(..) {
            // The pipes close with the process; a grandchild could keep them open.
            let _ = tokio::time::timeout(Duration::from_secs(2), collector).await;
        }
        status
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("===== {} transcript =====\n{}", self.name, self.transcript());
            eprintln!("===== end of {} transcript =====", self.name);
        }
    }
}

/// Copies `pipe` line by line into `transcript` (and `lines`, if given).
fn collect(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    prefix: &'static str,
    transcript: Arc<Mutex<String>>,
    lines: Option<mpsc::UnboundedSender<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            {
                let mut transcript = transcript.lock().expect("transcript lock");
                transcript.push_str(prefix);
                transcript.push_str("| ");
                transcript.push_str(&line);
                transcript.push('\n');
            }
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    })
}
