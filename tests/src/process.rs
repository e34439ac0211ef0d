//! Real processes: `test-server`/`topgun` (which announce `PORT=<n>`) and the single-role
//! service binaries (which listen on ports we pick).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Path of a workspace binary in the same profile folder as the running test.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found: build the binaries first (`cargo build --workspace --bins`, which scripts/test.sh does)",
        path.display()
    );
    path
}

/// A port for a child process to listen on, free when picked.
///
/// The port is released before the child binds it, so it is picked below the kernel's
/// ephemeral range: ports in that range are handed out to every outgoing connection
/// (gRPC clients, PostgreSQL pools, WebSockets of parallel tests) and one of those can
/// take a just-released port before the child binds it. Ports below the range are only
/// ever taken by an explicit bind, and a process-wide cursor keeps parallel tests of one
/// binary from picking the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let Some((low, high)) = reserved_port_range() else {
        return kernel_picked_port();
    };
    let span = u32::from(high - low);
    // Different test binaries start at different places, so a port a previous binary's
    // child still holds while exiting is not the first one tried.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let step = CURSOR.fetch_add(1, Ordering::Relaxed);
        let candidate = low + ((start + step) % span) as u16;
        let free_everywhere = std::net::TcpListener::bind(("0.0.0.0", candidate)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok();
        if free_everywhere {
            return candidate;
        }
    }
    kernel_picked_port()
}

/// Ports between 10000 and the start of the ephemeral range, when that leaves room.
fn reserved_port_range() -> Option<(u16, u16)> {
    const LOW: u16 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = range.split_whitespace().next()?.parse().ok()?;
    (ephemeral_low > LOW + 1_000).then_some((LOW, ephemeral_low))
}

/// A port the kernel picks (bound then released): the fallback off Linux.
fn kernel_picked_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running service process, killed when dropped.
#[derive(Debug)]
pub struct Service {
    child: Option<Child>,
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    env: HashMap<String, String>,
    /// Where stderr goes (appended across restarts); the test's own output when `None`.
    stderr_file: Option<PathBuf>,
}

impl Service {
    /// Starts `name` with `args` and extra `env` (RUST_LOG defaults to `warn`).
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> Service {
        Self::spawn_logged(name, args, env, None)
    }

    /// Like [`Service::spawn`], with stderr appended to `stderr_file` when given.
    pub fn spawn_logged(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        stderr_file: Option<PathBuf>,
    ) -> Service {
        let mut service = Service {
            child: None,
            name: name.to_string(),
            bin: bin_path(name),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            stderr_file,
        };
        service.start();
        service
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.stderr())
            .kill_on_drop(true);
        cmd
    }

    fn stderr(&self) -> Stdio {
        let Some(path) = &self.stderr_file else {
            return Stdio::inherit();
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }

    fn start(&mut self) {
        let child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// Starts it again with the same arguments (after a kill).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill_9 or terminate");
        self.start();
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("running process")
    }

    /// The exit status, if the process has exited on its own (not after a kill here).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The binary's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SIGKILL and reap.
    pub async fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM; returns the exit code once it exits (within `timeout`).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            send_signal(pid, "TERM");
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// Reads stdout lines until `PORT=<n>`.
    pub async fn wait_for_port(&mut self, timeout: Duration) -> u16 {
        let child = self.child.as_mut().expect("running process");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = line
                    .trim()
                    .strip_prefix("PORT=")
                    .and_then(|p| p.parse().ok())
                {
                    return Some((port, lines));
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some((port, lines))) => {
                // Keep draining stdout so the process never blocks on a full pipe.
                tokio::spawn(async move {
                    let mut lines = lines;
                    while let Ok(Some(_)) = lines.next_line().await {}
                });
                port
            }
            _ => panic!("{} did not print PORT=<n> within {timeout:?}", self.name),
        }
    }
}

/// Sends a signal by name. `kill(2)` is only reachable through unsafe FFI, which the
/// workspace forbids, so the `kill` command does it.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A `test-server` (or `topgun`) process and its port.
#[derive(Debug)]
pub struct TestServer {
    /// The process.
    pub process: Service,
    /// Gateway port.
    pub port: u16,
}

impl TestServer {
    /// `test-server --port 0` with extra env.
    pub async fn start(env: &[(&str, String)]) -> TestServer {
        Self::start_bin("test-server", &["--port", "0"], env).await
    }

    /// Any PORT-announcing binary.
    pub async fn start_bin(bin: &str, args: &[&str], env: &[(&str, String)]) -> TestServer {
        let mut process = Service::spawn(bin, args, env);
        let port = process.wait_for_port(Duration::from_secs(60)).await;
        TestServer { process, port }
    }

    /// `ws://127.0.0.1:<port>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
