//! Smoke runs of every scenario against the built `jackdaw` binary: a few
//! seconds and a few dozen users each, over STARTTLS and direct TLS, with
//! SCRAM-SHA-256 and PLAIN. They check that the load generator works and
//! reports plausible figures (non-zero, consistent with each other), never
//! how fast the server is: CI machines vary too much for that.
//!
//! Accounts are created by the generator itself (`--register`, XEP-0077),
//! which is much faster than one `jackdaw user add` process per account.

use std::path::Path;
use std::process::{Command, Output};

use jackdaw_tests::TestServer;
use serde_json::Value;

const USERS: &str = "24";

/// A server that lets the generator register its accounts.
fn server() -> TestServer {
    TestServer::start_with("[hosts.\"localhost\"]\nallow_registration = true\n")
}

/// The server's PID, found through its unique config path in
/// /proc/*/cmdline (the harness does not expose its child).
fn server_pid(server: &TestServer) -> u32 {
    let config = server.config_path().to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<_> = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy).collect();
        if args.iter().any(|a| a == &config) && args.iter().any(|a| a == "run") {
            return pid;
        }
    }
    panic!("no process runs with {config}");
}

/// Runs `jackdaw-load ARGS --json FILE` and returns its output and report.
fn load(server: &TestServer, name: &str, args: &[&str]) -> (Output, Value) {
    let json = server.dir().join(format!("{name}.json"));
    let output = Command::new(env!("CARGO_BIN_EXE_jackdaw-load"))
        .args(args)
        .args(["--timeout", "90", "--json"])
        .arg(&json)
        .output()
        .expect("running jackdaw-load");
    let report = read_json(&json, &output);
    (output, report)
}

fn read_json(path: &Path, output: &Output) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "no report at {} ({e}); jackdaw-load exited {}\nstdout:\n{}\nstderr:\n{}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn assert_success(output: &Output, report: &Value) {
    assert!(
        output.status.success(),
        "jackdaw-load exited {}\nstdout:\n{}\nstderr:\n{}\nreport: {report:#}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report["error"].is_null(), "{report:#}");
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A latency summary that has samples, in order.
fn assert_latency(l: &Value, what: &str) {
    assert!(u(&l["count"]) > 0, "{what}: no latency samples: {l}");
    let (p50, p99, max) = (f(&l["p50_ms"]), f(&l["p99_ms"]), f(&l["max_ms"]));
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 <= max,
        "{what}: percentiles out of order: {l}"
    );
}

fn assert_logins(report: &Value, expect_at_least: u64) {
    let login = &report["login"];
    assert!(u(&login["ok"]) >= expect_at_least, "{login:#}");
    assert_eq!(u(&login["failed"]), 0, "{login:#}");
    assert!(f(&login["logins_per_s"]) > 0.0, "{login:#}");
    assert_latency(&login["latency"], "login");
}

fn assert_server_sampled(report: &Value, pid: u32) {
    let s = &report["server"];
    assert_eq!(u(&s["pid"]), u64::from(pid), "{s:#}");
    assert!(u(&s["rss_peak_kib"]) > 0, "{s:#}");
    assert!(u(&s["rss_final_kib"]) > 0, "{s:#}");
    assert!(f(&s["cpu_avg_percent"]) >= 0.0, "{s:#}");
}

#[test]
fn login_over_starttls_with_scram() {
    let server = server();
    let pid = server_pid(&server);
    let addr = server.c2s_addr().to_string();
    let pid_arg = pid.to_string();
    let (out, report) = load(
        &server,
        "login",
        &[
            "--server",
            &addr,
            "--users",
            USERS,
            "--register",
            "--duration",
            "3",
            "--concurrency",
            "8",
            "--tls",
            "starttls",
            "--mech",
            "SCRAM-SHA-256",
            "--server-pid",
            &pid_arg,
            "login",
        ],
    );
    assert_success(&out, &report);
    assert_eq!(report["scenario"], "login");
    assert_eq!(u(&report["register"]["created"]), 24, "{report:#}");
    // More logins than accounts: every account logged in more than once.
    assert_logins(&report, 25);
    for phase in ["connect", "tls", "auth", "bind"] {
        assert!(u(&report["login"]["phases"][phase]["count"]) > 0, "{report:#}");
    }
    assert_server_sampled(&report, pid);
    assert!(String::from_utf8_lossy(&out.stdout).contains("logins"));
    server.stop();
}

#[test]
fn login_over_direct_tls_with_plain_at_an_arrival_rate() {
    let server = server();
    let addr = server.direct_tls_addr().to_string();
    let (out, report) = load(
        &server,
        "login-direct",
        &[
            "--server",
            &addr,
            "--users",
            USERS,
            "--register",
            "--duration",
            "3",
            "--tls",
            "direct",
            "--mech",
            "PLAIN",
            "--arrival-rate",
            "20",
            "login",
        ],
    );
    assert_success(&out, &report);
    // 20/s for 3 s is 60 arrivals; a slow CI machine may skip some at the cap.
    let login = &report["login"];
    assert!(
        u(&login["attempts"]) + u(&login["skipped_at_cap"]) <= 61,
        "{login:#}"
    );
    assert_logins(&report, 1);
    server.stop();
}

#[test]
fn chat_delivers_with_end_to_end_latency() {
    let server = server();
    let pid = server_pid(&server);
    let addr = server.c2s_addr().to_string();
    let pid_arg = pid.to_string();
    let (out, report) = load(
        &server,
        "chat",
        &[
            "--server",
            &addr,
            "--users",
            USERS,
            "--register",
            "--duration",
            "3",
            "--server-pid",
            &pid_arg,
            "chat",
            "--rate",
            "5",
        ],
    );
    assert_success(&out, &report);
    assert_logins(&report, 24);
    let chat = &report["chat"];
    let (sent, delivered) = (u(&chat["sent"]), u(&chat["delivered"]));
    assert!(sent > 0 && delivered > 0, "{chat:#}");
    assert!(delivered <= sent, "{chat:#}");
    assert_eq!(u(&chat["expected"]), sent, "{chat:#}");
    assert_eq!(u(&chat["sessions"]), 24, "{chat:#}");
    assert!(
        f(&chat["sent_per_s"]) > 0.0 && f(&chat["delivered_per_s"]) > 0.0,
        "{chat:#}"
    );
    assert_eq!(u(&chat["dropped_sessions"]), 0, "{chat:#}");
    assert_latency(&chat["latency"], "chat");
    assert_eq!(u(&chat["latency"]["count"]), delivered, "{chat:#}");
    assert_server_sampled(&report, pid);
    server.stop();
}

#[test]
fn idle_sessions_give_rss_per_session() {
    let server = server();
    let pid = server_pid(&server);
    let addr = server.direct_tls_addr().to_string();
    let pid_arg = pid.to_string();
    let (out, report) = load(
        &server,
        "idle",
        &[
            "--server",
            &addr,
            "--users",
            USERS,
            "--register",
            "--duration",
            "3",
            "--tls",
            "direct",
            "--server-pid",
            &pid_arg,
            "idle",
            "--settle",
            "1",
        ],
    );
    assert_success(&out, &report);
    assert_logins(&report, 24);
    let idle = &report["idle"];
    assert_eq!(u(&idle["sessions"]), 24, "{idle:#}");
    assert_eq!(u(&idle["dropped_sessions"]), 0, "{idle:#}");
    for key in ["rss_before_kib", "rss_hold_kib", "rss_after_kib"] {
        assert!(u(&idle[key]) > 0, "{key}: {idle:#}");
    }
    // The sign is not asserted: an allocator may return memory between readings.
    assert!(idle["rss_per_session_kib"].is_number(), "{idle:#}");
    server.stop();
}

#[test]
fn muc_fails_clearly_without_a_muc_service() {
    let server = server();
    let addr = server.c2s_addr().to_string();
    let (out, report) = load(
        &server,
        "muc",
        &[
            "--server",
            &addr,
            "--users",
            "4",
            "--register",
            "--duration",
            "2",
            "--step-timeout",
            "10",
            "muc",
            "--room",
            "bench@rooms.localhost",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("rooms.localhost") && error.contains("MUC"),
        "{report:#}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("rooms.localhost"));
    // The logins before the check worked.
    assert_logins(&report, 4);
    server.stop();
}

#[test]
fn refuses_a_non_loopback_server() {
    let output = Command::new(env!("CARGO_BIN_EXE_jackdaw-load"))
        .args(["--server", "192.0.2.1:5222", "--duration", "1", "login"])
        .output()
        .expect("running jackdaw-load");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
