//! The running server's admin socket (`{data_path}/admin.sock`, mode 0600):
//! how `jackdaw user passwd|del` reach a server running in another process,
//! so a deleted account's sessions end and a cached password is forgotten
//! at once, and how `jackdaw sessions` lists who is online.
//!
//! One JSON request per connection, one JSON line back. Only the server's
//! own user (who owns data_path) can connect: the file mode is the access
//! control, as with Prosody's prosodyctl shell socket.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use jackdaw_core::jid::BareJid;
use jackdaw_core::server::Server;
use jackdaw_core::stream::StreamError;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// A request is one short line.
const MAX_REQUEST: u64 = 4096;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// An account's credentials changed or it was deleted, outside the
    /// server (the CLI wrote the database or the web app).
    AccountChanged {
        host: String,
        user: String,
        deleted: bool,
    },
    /// Who is online.
    Sessions,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sessions closed by the request.
    #[serde(default)]
    pub closed: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<String>,
}

pub fn path(data_path: &Path) -> PathBuf {
    data_path.join("admin.sock")
}

/// Removes the socket file when the server's run ends.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the socket (replacing one left by a server that died) and serves
/// it until shutdown; the file goes when the returned guard is dropped.
pub fn start(server: &Arc<Server>) -> Result<SocketFile> {
    let path = path(&server.config.global.data_path);
    if path.exists() {
        // A live server would answer; a dead one left its file behind.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            anyhow::bail!(
                "{} is in use: is another Jackdaw running with this data_path?",
                path.display()
            );
        }
        std::fs::remove_file(&path).with_context(|| format!("removing the stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    let server = server.clone();
    let file = SocketFile(path);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = server.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let server = server.clone();
                        // The whole exchange is bounded: a client that never
                        // reads its answer holds nothing for long.
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(CLIENT_TIMEOUT, serve(&server, stream)).await;
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "admin socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    });
    Ok(file)
}

async fn serve(server: &Server, stream: UnixStream) {
    // The file mode is set just after binding; the peer's uid closes that
    // window: only the server's own user (who owns data_path) is heard.
    let own_uid = std::fs::metadata(&server.config.global.data_path)
        .map(|m| m.uid())
        .ok();
    let peer_uid = stream.peer_cred().map(|c| c.uid()).ok();
    if own_uid.is_none() || peer_uid != own_uid {
        warn!(?peer_uid, "admin socket: connection from another user refused");
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let reply = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(server, request),
            Err(e) => Reply {
                error: Some(format!("bad request: {e}")),
                ..Reply::default()
            },
        },
        _ => return,
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
}

fn handle(server: &Server, request: Request) -> Reply {
    match request {
        Request::AccountChanged { host, user, deleted } => {
            let Some(h) = server.host(&host) else {
                return Reply {
                    error: Some(format!("{host} is not a host of this server")),
                    ..Reply::default()
                };
            };
            h.auth.forget(&host, &user);
            let mut closed = 0;
            let account = BareJid::new(&format!("{user}@{host}")).ok().filter(|_| deleted);
            for session in account.iter().flat_map(|bare| server.sessions.resources(bare)) {
                session.close(StreamError::NotAuthorized);
                closed += 1;
            }
            info!(account = %format!("{user}@{host}"), deleted, closed, "account changed by the admin CLI");
            Reply {
                ok: true,
                closed,
                ..Reply::default()
            }
        }
        Request::Sessions => {
            let mut sessions: Vec<String> = server.sessions.all().iter().map(|s| s.jid.to_string()).collect();
            sessions.sort();
            Reply {
                ok: true,
                sessions,
                ..Reply::default()
            }
        }
    }
}

/// Sends a request to the running server; `Ok(None)` when none runs.
pub async fn ask(data_path: &Path, request: &Request) -> Result<Option<Reply>> {
    let path = path(data_path);
    let mut stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        // No socket, or one a dead server left: no server runs.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        // Anything else (permission denied, ...) must not pass for "no
        // server": the change would silently not reach it.
        Err(e) => {
            return Err(e).with_context(|| format!("cannot reach the running server at {}", path.display()));
        }
    };
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    let exchange = async {
        stream.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .context("the running server did not answer on its admin socket")?
        .context("talking to the running server")?;
    let reply: Reply = serde_json::from_str(&answer).context("the running server's answer")?;
    match reply.error {
        Some(e) => anyhow::bail!("the running server refused: {e}"),
        None => Ok(Some(reply)),
    }
}
