//! A server node as a user runs it — a `gst-room server --redis` process — killed with SIGKILL
//! (`kill -9`, no goodbye of any kind): the participants on the other nodes get
//! `session-ended` for their sessions with its participant and LEFT within 5 s, and the room it
//! owned goes on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst_room_tests::Client;
use gst_room_tests::cluster::{Node, RedisServer};
use room_signaling::Config;

const BIN: &str = env!("CARGO_BIN_EXE_gst-room");

/// `gst-room server --redis URL --node-id ID` on a free port; SIGKILLed on drop.
struct ServerProcess {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl ServerProcess {
    fn start(redis: &RedisServer, id: &str) -> ServerProcess {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--redis", &redis.url()])
            .args(["--node-id", id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("gst-room runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("gst-room printed where it listens")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split('/').next().unwrap().to_owned();
            }
        };
        // Keep reading, so that the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess { child, addr }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL, as `kill -9` does, and reap it.
    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Reads until `left who`: the sessions that `session-ended` ended before it.
#[test]
fn a_server_process_killed_with_sigkill_leaves_its_room_to_the_others() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(RedisServer::start());
    let mut doomed = ServerProcess::start(&redis, "doomed");
    let node2 = Node::start("n2", &redis, Config::default());
    let node3 = Node::start("n3", &redis, Config::default());
    runtime.block_on(async {
        // alice joins first, on the process: it owns the room.
        let mut alice = Client::join(&doomed.ws_url(), "k9", "alice").await;
        alice.publish("cam").await;
        let mut bob = Client::join(&node2.ws_url(), "k9", "bob").await;
        let mut carol = Client::join(&node3.ws_url(), "k9", "carol").await;
        let session = bob.play_session("alice", "cam").await;
        carol.sync().await;

        let killed = Instant::now();
        doomed.kill_9();
        // Both read meanwhile (an unread client answers no ping and is dropped as silent).
        let (bob_ended, carol_ended) = tokio::join!(
            bob.sessions_ended_before_left("alice"),
            carol.sessions_ended_before_left("alice")
        );
        let noticed = killed.elapsed();
        assert!(noticed < Duration::from_secs(5), "LEFT after {noticed:?}");
        assert_eq!(bob_ended, [session]);
        assert_eq!(carol_ended, Vec::<String>::new());

        // The room goes on, on the survivors.
        bob.chat_reaches("bob", &mut carol, "carol", "still here")
            .await;
    });
}
