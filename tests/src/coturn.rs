//! A coturn TURN server of the test's own, in one host of a test [`Network`]: TURN REST
//! authentication (`use-auth-secret`) with a secret generated per instance, plain UDP/TCP on
//! the host's LAN address only (no DTLS listener, no CLI, no web admin), log on stdout; with
//! [`Coturn::start_tls`] also TLS on port 443 with a certificate of the test's
//! [`TestCa`]. The room server is given the same secret (`--turn-secret`) and [`Coturn::url`]
//! or [`Coturn::tls_url`]; killed on drop.
//!
//! Ports: the host's namespace is the test's own, so the standard port 3478, 443 and the relay
//! range below are free by construction; nothing listens in the root namespace.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use crate::netns::Network;

/// The TURN port in the host's namespace.
pub const PORT: u16 = 3478;
/// The TURN-over-TLS port in the host's namespace: 443, as a server for networks that allow
/// only web traffic would use.
pub const TLS_PORT: u16 = 443;
/// Relay ports in the host's namespace.
const RELAY_PORTS: (u16, u16) = (49_152, 49_407);

/// A running turnserver; killed on drop, its scratch folder removed.
pub struct Coturn {
    child: Child,
    /// Its pid file and (unused, but opened) user database.
    scratch: std::path::PathBuf,
    address: Ipv4Addr,
    /// The TURN REST secret (`static-auth-secret`).
    pub secret: String,
    /// Every line it logged so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Coturn {
    /// Starts turnserver in `host` of `net`, listening (UDP and TCP, no TLS) and relaying on
    /// the host's address; returns once it listens.
    pub fn start(net: &Network, host: &str) -> Coturn {
        Coturn::launch(net, host, None)
    }

    /// [`Coturn::start`] plus TURN over TLS on [`TLS_PORT`] with `cert` (PEM, its chain) and
    /// `key`; returns once the TLS listener is open.
    pub fn start_tls(net: &Network, host: &str, cert: &Path, key: &Path) -> Coturn {
        Coturn::launch(net, host, Some((cert, key)))
    }

    fn launch(net: &Network, host: &str, tls: Option<(&Path, &Path)>) -> Coturn {
        let address = net.address(host);
        let secret = format!("{:032x}", rand::random::<u128>());
        let tmp = std::env::temp_dir().join(format!("gst-room-coturn-{}", net.namespace(host)));
        std::fs::create_dir_all(&tmp).unwrap();
        let tls_args = match tls {
            Some((cert, key)) => vec![
                format!("--tls-listening-port={TLS_PORT}"),
                format!("--cert={}", cert.display()),
                format!("--pkey={}", key.display()),
            ],
            None => vec!["--no-tls".to_owned()],
        };
        // What coturn prints once the listener the clients use is bound.
        let ready_line = match tls {
            Some(_) => format!("IPv4. TLS/TCP listener opened on : {address}:{TLS_PORT}"),
            None => "IPv4. UDP listener opened on".to_owned(),
        };
        // stdbuf: turnserver block-buffers its log when stdout is a pipe.
        let mut child = net
            .command(host, "stdbuf")
            .args([
                "-oL",
                "turnserver",
                // Verbose enough to log its listeners and each allocation.
                "--verbose",
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=gst-room.test",
                &format!("--listening-ip={address}"),
                &format!("--relay-ip={address}"),
                &format!("--listening-port={PORT}"),
                &format!("--min-port={}", RELAY_PORTS.0),
                &format!("--max-port={}", RELAY_PORTS.1),
                "--no-dtls",
                "--no-cli",
                "--no-software-attribute",
                "--fingerprint",
                "--simple-log",
                "--log-file=stdout",
                &format!("--pidfile={}", tmp.join("turnserver.pid").display()),
                &format!("--userdb={}", tmp.join("turndb").display()),
            ])
            .args(&tls_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (Debian package coturn, installed by scripts/setup.sh)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready, listening) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stdout.take().unwrap());
        let record = log.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if line.contains(&ready_line) {
                    let _ = ready.send(());
                }
                record.lock().unwrap().push(line);
            }
        });
        let mut coturn = Coturn {
            child,
            scratch: tmp,
            address,
            secret,
            log,
        };
        if listening
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_err()
        {
            let _ = coturn.child.kill();
            panic!("turnserver did not start: {:?}", coturn.log());
        }
        coturn
    }

    /// `turn:ADDRESS:3478?transport=udp`, for `--turn-url`.
    pub fn url(&self) -> String {
        format!("turn:{}:{PORT}?transport=udp", self.address)
    }

    /// `turns:ADDRESS:443?transport=tcp`, for `--turn-url` (after [`Coturn::start_tls`]).
    pub fn tls_url(&self) -> String {
        format!("turns:{}:{TLS_PORT}?transport=tcp", self.address)
    }

    /// Its log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A certificate authority of the test's own (`tests/test-ca.sh`) and a server certificate it
/// signed: clients are made to trust [`TestCa::ca`], as users' machines trust a public CA.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// A new CA in a folder of its own (removed on drop) and a certificate for `name` (an
    /// IPv4 address or a DNS name).
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "gst-room-test-ca-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/test-ca.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(&dir)
            .arg(name)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "test-ca.sh (needs openssl): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCa { dir }
    }

    /// The CA's certificate (PEM), what clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server certificate's key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
