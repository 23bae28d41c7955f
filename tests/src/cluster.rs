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

/// nginx (Debian package nginx) on 127.0.0.1 and a free port, proxying WebSockets to `primary`,
/// or to `backup` while `primary` does not answer — the load balancer in front of two nodes.
/// One process (no master), killed on drop.
pub struct Nginx {
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    child: Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    /// Starts it on `addr` (a free port picked by the caller, so that the nodes can allow it
    /// as an origin before nginx runs) and waits until it accepts connections.
    pub fn start(addr: SocketAddr, primary: SocketAddr, backup: SocketAddr) -> Nginx {
        let dir = std::env::temp_dir().join(format!("gst-room-nginx-{}", addr.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream rooms {{ server {primary} max_fails=1 fail_timeout=30s; server {backup} backup; }}
  server {{
    listen {addr};
    location / {{
      proxy_pass http://rooms;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection \"upgrade\";
      proxy_set_header Host $http_host;
      proxy_read_timeout 1h;
      proxy_next_upstream error timeout;
    }}
  }}
}}
"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx, see scripts/setup.sh)");
        let deadline = std::time::Instant::now() + crate::WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { addr, child, dir }
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
