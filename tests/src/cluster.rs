//! Helpers of the several-nodes tests: a real `redis-server` on a free port, and server nodes
//! running in this process that can be killed abruptly.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use room_signaling::Config;
use room_signaling::cluster::ClusterConfig;

/// A `redis-server` (Debian package redis-server) on 127.0.0.1 and a free port, without
/// persistence; killed on drop.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = RedisServer { port, child: None };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): everything it held is lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty) and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (apt-get install redis-server, see scripts/setup.sh)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        while !self.answers().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        tcp.write_all(b"PING\r\n").await.is_ok()
            && tcp.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server node on its own runtime, sharing `redis` with the others. [`Node::kill`] drops the
/// runtime without running any of its shutdown code: no close frame, no LEFT, no goodbye to
/// Redis — to the others it is a machine that died.
pub struct Node {
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Node {
    /// Starts node `id` with `config` plus the cluster settings.
    pub fn start(id: &str, redis: &RedisServer, mut config: Config) -> Node {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        config.cluster = Some(ClusterConfig {
            redis_url: redis.url(),
            node_id: id.to_owned(),
            advertise_url: format!("http://{addr}/"),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            room_signaling::run(listener, config, std::future::pending())
                .await
                .expect("node runs");
        });
        Node {
            addr,
            runtime: Some(runtime),
        }
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Stops the node abruptly (see the type doc).
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
