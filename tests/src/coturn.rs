//! A coturn TURN server of the test's own, in one host of a test [`Network`]: TURN REST
//! authentication (`use-auth-secret`) with a secret generated per instance, plain UDP/TCP on
//! the host's LAN address only (no TLS/DTLS listeners, no CLI, no web admin), log on stdout.
//! The room server is given the same secret (`--turn-secret`) and [`Coturn::url`]; killed on
//! drop.
//!
//! Ports: the host's namespace is the test's own, so the standard port 3478 and the relay
//! range below are free by construction; nothing listens in the root namespace.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use crate::netns::Network;

/// The TURN port in the host's namespace.
pub const PORT: u16 = 3478;
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
    /// Starts turnserver in `host` of `net`, listening and relaying on the host's address;
    /// returns once it listens.
    pub fn start(net: &Network, host: &str) -> Coturn {
        let address = net.address(host);
        let secret = format!("{:032x}", rand::random::<u128>());
        let tmp = std::env::temp_dir().join(format!("gst-room-coturn-{}", net.namespace(host)));
        std::fs::create_dir_all(&tmp).unwrap();
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
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-software-attribute",
                "--fingerprint",
                "--simple-log",
                "--log-file=stdout",
                &format!("--pidfile={}", tmp.join("turnserver.pid").display()),
                &format!("--userdb={}", tmp.join("turndb").display()),
            ])
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
                // coturn prints this once its UDP listener is bound.
                if line.contains("IPv4. UDP listener opened on") {
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
