//! End-to-end harness: the built `jackdaw` binary, run as an operator would.
//!
//! [`TestServer`] writes a config into a fresh temporary directory, listens on
//! loopback ports chosen by the kernel, starts `jackdaw --config FILE run` with
//! its output going to a log file, and waits for `<data_path>/listeners.json`
//! to learn the ports. Users are created with `jackdaw user add`, the same
//! command an operator types. [`TestServer::stop`] sends SIGTERM and asserts a
//! clean exit; if a test panics while a server is alive, the server's log and
//! the path of its kept directory are printed.
//!
//! Clients: [`client::StartTls`] lets tokio-xmpp log in over the STARTTLS port
//! while trusting exactly the server's self-signed certificate, and
//! [`peer::Peer`] runs a Python script from `tests/peers/` (slixmpp) as the
//! other side of a conversation.
//!
//! Paths come from the environment or the workspace layout:
//!
//! | what             | environment      | default                         |
//! |------------------|------------------|---------------------------------|
//! | server binary    | `JACKDAW_BIN`    | `<workspace>/target/debug/jackdaw` |
//! | Python + slixmpp | `JACKDAW_PYTHON` | `<workspace>/.venv/bin/python`  |
//!
//! ```no_run
//! # async fn demo() {
//! let server = jackdaw_tests::TestServer::start();
//! server.add_user("alice@localhost", "alice-secret");
//! let client = server.tokio_xmpp_client("alice@localhost", "alice-secret");
//! // ... drive `client` (a futures::Stream of tokio_xmpp::Event) ...
//! # drop(client);
//! server.stop();
//! # }
//! ```

pub mod client;
pub mod peer;

use std::fs::{self, File};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The only virtual host the default config declares.
pub const DOMAIN: &str = "localhost";

/// How long to wait for `listeners.json` after starting the binary.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the process to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The workspace root: the parent of this package's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// `$JACKDAW_BIN`, else `<workspace>/target/debug/jackdaw`.
pub fn jackdaw_bin() -> PathBuf {
    std::env::var_os("JACKDAW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/jackdaw"))
}

/// A running `jackdaw` process with its own config, data directory and ports.
pub struct TestServer {
    /// `None` once the directory was kept for a post-mortem.
    dir: Option<TempDir>,
    root: PathBuf,
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// `None` once stopped.
    child: Option<Child>,
    c2s: SocketAddr,
    direct_tls: SocketAddr,
    http: SocketAddr,
}

impl TestServer {
    /// Starts a server for `localhost` with the default config.
    pub fn start() -> TestServer {
        TestServer::start_with("")
    }

    /// Starts a server whose config has `extra_toml` inserted after the global
    /// keys: bare keys are global settings, and it may add tables. If it
    /// declares `[hosts."localhost"]` itself, the default (empty) one is left out.
    pub fn start_with(extra_toml: &str) -> TestServer {
        let bin = jackdaw_bin();
        assert!(
            bin.is_file(),
            "{} does not exist: run `cargo build -p jackdaw` or set JACKDAW_BIN",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("jackdaw-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let config = root.join("jackdaw.toml");
        let log = root.join("jackdaw.log");

        let mut toml = format!(
            "interfaces = [\"127.0.0.1\"]\n\
             c2s_ports = [0]\n\
             c2s_direct_tls_ports = [0]\n\
             http_ports = [0]\n\
             https_ports = [0]\n\
             data_path = {data:?}\n\
             log = \"info\"\n\n\
             {extra_toml}\n"
        );
        if !extra_toml.contains("[hosts.\"localhost\"]") {
            toml.push_str("\n[hosts.\"localhost\"]\n");
        }
        fs::write(&config, toml).expect("writing the config");

        let out = File::create(&log).expect("creating the log file");
        let err = out.try_clone().expect("duplicating the log file handle");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));

        // Ports are unknown until listeners.json appears; until then a panic
        // still has to print the log, so build the value first.
        let unbound: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut server = TestServer {
            dir: Some(dir),
            root,
            config,
            data,
            log,
            child: Some(child),
            c2s: unbound,
            direct_tls: unbound,
            http: unbound,
        };
        server.wait_for_listeners();
        server
    }

    fn wait_for_listeners(&mut self) {
        let path = self.data.join("listeners.json");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                let json: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
                let first = |key: &str| -> SocketAddr {
                    json[key][0]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("{}: no address in {key:?}: {text}", path.display()))
                };
                self.c2s = first("c2s");
                self.direct_tls = first("c2s_direct_tls");
                self.http = first("http");
                return;
            }
            let child = self.child.as_mut().expect("server not stopped");
            if let Some(status) = child.try_wait().expect("polling the server process") {
                panic!("jackdaw exited during start-up with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "no {} after {START_TIMEOUT:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates an account with `jackdaw user add JID`, the password on stdin.
    pub fn add_user(&self, jid: &str, password: &str) {
        let mut child = Command::new(jackdaw_bin())
            .arg("--config")
            .arg(&self.config)
            .args(["user", "add", jid])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting `jackdaw user add`");
        let mut stdin = child.stdin.take().expect("piped stdin");
        writeln!(stdin, "{password}").expect("writing the password");
        drop(stdin);
        let output = child.wait_with_output().expect("waiting for `jackdaw user add`");
        assert!(
            output.status.success(),
            "`jackdaw user add {jid}` failed with {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    /// The STARTTLS client port (TLS is required before authentication).
    pub fn c2s_addr(&self) -> SocketAddr {
        self.c2s
    }

    /// The XEP-0368 direct TLS client port.
    pub fn direct_tls_addr(&self) -> SocketAddr {
        self.direct_tls
    }

    /// The HTTP port.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The server's self-signed certificate for `localhost` (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.data.join("certs").join(format!("{DOMAIN}.crt"))
    }

    /// The temporary directory holding the config, the log and `data/`.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The configured `data_path`.
    pub fn data_path(&self) -> &Path {
        &self.data
    }

    /// The config file the server was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }

    /// A tokio-xmpp client for `jid` that connects to [`c2s_addr`](Self::c2s_addr)
    /// with STARTTLS and trusts only [`cert_path`](Self::cert_path). It starts
    /// connecting when first polled; it reconnects on its own after a failure, so
    /// treat [`tokio_xmpp::Event::Disconnected`] as the end.
    pub fn tokio_xmpp_client(&self, jid: &str, password: &str) -> tokio_xmpp::Client {
        let jid: tokio_xmpp::jid::Jid = jid.parse().unwrap_or_else(|e| panic!("JID {jid:?}: {e}"));
        let connector = client::StartTls::trusting(self.c2s, &self.cert_path());
        tokio_xmpp::Client::new_with_connector(
            jid,
            password,
            connector,
            tokio_xmpp::xmlstream::Timeouts::tight(),
        )
    }

    /// Sends SIGTERM and asserts that the server exits with status 0 in time.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers; `child` is not reaped yet,
        // so the pid still names our process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("polling the server process") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("jackdaw did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "jackdaw exited with {status} after SIGTERM");
        status
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("===== jackdaw log ({}) =====\n{}", self.log.display(), self.log());
            eprintln!("===== end of jackdaw log =====");
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the test directory {}", dir.keep().display());
            }
        }
    }
}
