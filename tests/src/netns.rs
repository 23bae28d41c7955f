//! Separate hosts for tests that need participants on different addresses: network namespaces
//! on one virtual LAN (a bridge), with no loopback path between them — as between machines.
//!
//! ```no_run
//! use gst_room_tests::netns::Network;
//! let net = Network::new(&["srv", "a", "b"]);          // 10.77.0.2, .3, .4
//! let server = net.command("srv", "gst-room").args(["server", "--listen", "0.0.0.0:8443"]).spawn();
//! let addr = net.address("srv");                       // what the others reach it at
//! // ... net drops last: its namespaces are removed even when the test panics
//! ```
//!
//! The topology is defined once, in `tests/netns.sh` (browser tests use the same script). Each
//! [`Network`] gets unique names (`gstroom-PID-N-HOST`), so parallel tests and parallel runs do
//! not collide; dropping it removes its namespaces, and creating one first removes those left
//! by runs whose process died (a killed test cannot run its `Drop`). Needs root (CI runs as
//! root): [`Network::new`] panics otherwise, so that a test never passes without running.
//!
//! Processes started with [`Network::command`] run inside a namespace through
//! `ip netns exec`; kill them before the `Network` drops (declare it first).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The script that defines the topology.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/netns.sh");

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// A set of hosts (namespaces) on one LAN; removed on drop.
pub struct Network {
    run: String,
    hosts: Vec<(String, Ipv4Addr)>,
}

impl Network {
    /// Creates one namespace per host name (1-12 of a-z 0-9), addressed 10.77.0.2, .3, ... in
    /// the order given.
    pub fn new(hosts: &[&str]) -> Network {
        let _ = Command::new("bash").args([SCRIPT, "clean"]).status();
        let run = format!(
            "gstroom-{}-{}",
            std::process::id(),
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        );
        let output = Command::new("bash")
            .arg(SCRIPT)
            .arg("up")
            .arg(&run)
            .args(hosts)
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "cannot create the network namespaces (root and iproute2 needed): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let hosts = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let (host, addr) = line.split_once(' ').expect("HOST ADDRESS");
                (host.to_owned(), addr.parse().expect("an IPv4 address"))
            })
            .collect();
        Network { run, hosts }
    }

    /// The namespace of `host` (for `ip netns exec`).
    pub fn namespace(&self, host: &str) -> String {
        self.address(host); // panics on an unknown host
        format!("{}-{host}", self.run)
    }

    /// The address of `host` on the LAN.
    pub fn address(&self, host: &str) -> Ipv4Addr {
        self.hosts
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no host {host} in this network"))
    }

    /// `program` to be run inside `host`'s namespace (add arguments, then spawn).
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(host)])
            .arg(program);
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([SCRIPT, "down", &self.run])
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_reach_each_other_over_the_lan_and_vanish_on_drop() {
        let net = Network::new(&["x", "y"]);
        assert_eq!(net.address("x"), Ipv4Addr::new(10, 77, 0, 2));
        let ns = net.namespace("y");
        // y has its LAN address and nothing else but loopback.
        let out = net
            .command("y", "ip")
            .args(["-4", "-o", "addr"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("10.77.0.3/24"), "{text}");
        // x reaches y over the bridge (a TCP connect to a closed port is refused, not lost).
        let out = net
            .command("x", "bash")
            .args([
                "-c",
                "exec 3<>/dev/tcp/10.77.0.3/9 && echo open || echo refused",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("refused") && !text.contains("timed out"),
            "{text}"
        );
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&ns));
    }
}
