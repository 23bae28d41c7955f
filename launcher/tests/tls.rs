//! `gst-room server` over TLS as people use it across machines: servers and clients in separate
//! network namespaces (gst_room_tests::netns), real curl/openssl as the other side's tools.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::media::*;
use gst_room_tests::netns::Network;

const BIN: &str = env!("CARGO_BIN_EXE_gst-room");
const START_WAIT: Duration = Duration::from_secs(20);

/// A running process with its stdout and stderr lines on one channel; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("the command runs");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Lines up to and including the first that contains `needle`.
    fn until(&mut self, needle: &str) -> &[String] {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return &self.seen;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit; the exit code, or None (after killing it) past `wait`.
    fn exit_within(&mut self, wait: Duration) -> Option<i32> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every line printed so far (after the process ended: all of them).
    fn output(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a TLS server printed at start.
#[derive(Debug)]
struct Printed {
    links: Vec<String>,
    fingerprint: String,
    lines: Vec<String>,
}

/// Starts `gst-room server ARGS` (through `wrap`, e.g. in a namespace) and reads what it prints
/// up to the last invite link.
fn start_server(mut command: Command, args: &[&str]) -> (Running, Printed) {
    command.arg(BIN).arg("server").args(args);
    let mut server = Running::start(command);
    server.until("Open the conference page in a browser");
    // The links follow, one per line (stderr lines may come in between: two pipes).
    while let Ok(line) = server.lines.recv_timeout(Duration::from_millis(500)) {
        server.seen.push(line);
    }
    let lines = server.seen.clone();
    let links = lines
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| l.starts_with("http"))
        .map(str::to_owned)
        .collect();
    let fingerprint = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("SHA-256 fingerprint: "))
        .unwrap_or_default()
        .to_owned();
    (
        server,
        Printed {
            links,
            fingerprint,
            lines,
        },
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gst-room-tls-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The SHA-256 fingerprint of the certificate served at `addr`, as openssl sees it
/// (`AB:CD:...`), asked from inside `command`'s context (a namespace, or here).
fn served_fingerprint(mut command: Command, addr: &str) -> String {
    let out = command
        .args([
            "bash",
            "-c",
            &format!(
                "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
            ),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_owned())
        .unwrap_or_else(|| panic!("no certificate served at {addr}: {text}"))
}

/// A plain `Command` for `program` in this namespace (the test's own).
fn here(program: &str) -> Command {
    Command::new(program)
}

#[test]
fn invite_links_answer_over_https_from_another_machine_and_the_certificate_survives_a_restart() {
    let net = Network::new(&["srv", "a"]);
    let srv = net.address("srv").to_string();
    let tls_dir = temp_dir("restart");
    let dir_arg = tls_dir.display().to_string();
    let args = [
        "--listen",
        "0.0.0.0:8443",
        "--tls-self-signed",
        "--tls-dir",
        &dir_arg,
    ];
    let (mut server, printed) = start_server(net.command("srv", "env"), &args);
    assert!(
        printed
            .lines
            .iter()
            .any(|l| l.contains("self-signed certificate generated")),
        "{printed:?}"
    );
    assert!(!printed.links.is_empty(), "{printed:?}");
    for link in &printed.links {
        assert!(
            link.starts_with("https://") && !link.contains("0.0.0.0") && !link.contains("[::]"),
            "{link}"
        );
    }
    assert!(
        printed.links.contains(&format!("https://{srv}:8443/")),
        "{printed:?}"
    );

    // Every link answers over https from another host that trusts the certificate file.
    let cert = tls_dir.join("cert.pem");
    for link in &printed.links {
        let host_port = link.trim_start_matches("https://").trim_end_matches('/');
        let out = net
            .command("a", "curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&cert)
            // A host-name link: resolve it to the server's address as the LAN's DNS would.
            .args(["--resolve", &format!("{host_port}:{srv}")])
            .arg(format!("{link}?room=demo"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "{link}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let served = served_fingerprint(net.command("a", "env"), &format!("{srv}:8443"));
    assert_eq!(served, printed.fingerprint);

    // A restart with the same folder serves the same certificate.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let (_server, again) = start_server(net.command("srv", "env"), &args);
    assert!(
        again
            .lines
            .iter()
            .any(|l| l.contains("self-signed certificate reused")),
        "{again:?}"
    );
    assert_eq!(again.fingerprint, printed.fingerprint);
    let served = served_fingerprint(net.command("a", "env"), &format!("{srv}:8443"));
    assert_eq!(served, printed.fingerprint);
    let _ = std::fs::remove_dir_all(&tls_dir);
}

#[test]
fn public_url_replaces_the_invite_links_and_plain_http_on_the_lan_warns_once() {
    let net = Network::new(&["srv"]);
    let (_server, printed) = start_server(
        net.command("srv", "env"),
        &[
            "--listen",
            "0.0.0.0:8443",
            "--public-url",
            "https://conf.example.org",
        ],
    );
    assert_eq!(printed.links, ["https://conf.example.org/"]);
    assert!(
        !printed.lines.iter().any(|l| l.contains("WARNING")),
        "{printed:?}"
    );

    let (mut plain, printed) =
        start_server(net.command("srv", "env"), &["--listen", "0.0.0.0:8444"]);
    assert_eq!(
        printed.links,
        [format!("http://{}:8444/", net.address("srv"))]
    );
    let _ = plain.child.kill();
    let output = plain.output();
    let warnings = output
        .matches("WARNING: listening on 0.0.0.0:8444 without TLS")
        .count();
    assert_eq!(warnings, 1, "{output}");
    assert!(output.contains("--tls-self-signed"), "{output}");
}

#[test]
fn a_pipeline_command_with_the_wrong_tls_ca_file_fails_with_the_tls_reason_within_10_s() {
    let net = Network::new(&["srv", "b"]);
    let srv = net.address("srv");
    let tls_dir = temp_dir("wrong");
    let (_server, _) = start_server(
        net.command("srv", "env"),
        &[
            "--listen",
            "0.0.0.0:8443",
            "--tls-self-signed",
            "--tls-dir",
            &tls_dir.join("server").display().to_string(),
        ],
    );
    let (other, _) =
        room_signaling::tls::self_signed(&tls_dir.join("other"), &["localhost".into()]).unwrap();

    let started = Instant::now();
    let mut play = net.command("b", BIN);
    play.args([
        "play",
        "--headless",
        "--quiet",
        "--participant",
        "nobody",
        "--server",
    ])
    .arg(format!("wss://{srv}:8443/ws"))
    .arg("--tls-ca-file")
    .arg(&other.cert);
    let mut play = Running::start(play);
    let code = play.exit_within(Duration::from_secs(10));
    let took = started.elapsed();
    let output = play.output();
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?} after {took:?}: {output}"
    );
    assert!(
        output.contains(&format!("tls: certificate not trusted for {srv}")),
        "{output}"
    );

    // The right file joins (the same command, the server's certificate).
    let mut play = net.command("b", BIN);
    play.args(["play", "--headless", "--participant", "nobody", "--server"])
        .arg(format!("wss://{srv}:8443/ws"))
        .arg("--tls-ca-file")
        .arg(tls_dir.join("server/cert.pem"));
    let mut play = Running::start(play);
    play.until("room: in room demo as ");
    let _ = std::fs::remove_dir_all(&tls_dir);
}

/// Copies `from`'s cert.pem and key.pem over `to`'s, as a certificate renewal would.
fn renew(from: &room_signaling::tls::TlsFiles, to: &room_signaling::tls::TlsFiles) {
    for (src, dst) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let tmp = dst.with_extension("new");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, dst).unwrap();
    }
}

fn cert_arg(path: &Path) -> String {
    format!("tls-ca-file={}", path.display())
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    init();
    let dir = temp_dir("sighup");
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let (old, _) = room_signaling::tls::self_signed(&dir.join("old"), &names).unwrap();
    let (new, _) = room_signaling::tls::self_signed(&dir.join("new"), &names).unwrap();
    // The server's own files: a copy of the old ones, renewed in place later.
    let (live, _) = room_signaling::tls::self_signed(&dir.join("live"), &names).unwrap();
    renew(&old, &live);
    let (mut server, printed) = start_server(
        here("env"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &live.cert.display().to_string(),
            "--tls-key",
            &live.key.display().to_string(),
        ],
    );
    let addr = printed.links[0]
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let url = format!("wss://{addr}/ws");
    let old_fp = room_signaling::tls::fingerprints(&old.cert).unwrap().sha256;
    let new_fp = room_signaling::tls::fingerprints(&new.cert).unwrap().sha256;
    assert_eq!(printed.fingerprint, old_fp);

    let first = Viewer::new(
        &url,
        &format!("room=renew username=first {}", cert_arg(&old.cert)),
    )
    .start();
    wait_for_event(&first.pipeline, "room-state", |_| true);

    // A broken file is not taken: the old certificate stays (and the error is logged).
    let pid = server.child.id().to_string();
    let hangup = || {
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    };
    let broken = dir.join("broken.pem");
    std::fs::write(&broken, "not a certificate\n").unwrap();
    std::fs::rename(&broken, &live.cert).unwrap();
    hangup();
    server.until("SIGHUP: TLS certificate not reloaded, keeping the old one");
    assert_eq!(served_fingerprint(here("env"), &addr), old_fp);

    renew(&new, &live);
    hangup();
    let deadline = Instant::now() + START_WAIT;
    while served_fingerprint(here("env"), &addr) != new_fp {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A newcomer trusting only the new certificate joins; the first participant hears it over
    // the connection it opened before the renewal (no reconnect in between).
    let second = Viewer::new(
        &url,
        &format!("room=renew username=second {}", cert_arg(&new.cert)),
    )
    .start();
    wait_for_event(&second.pipeline, "room-state", |_| true);
    let bus = first.pipeline.bus().unwrap();
    let joined = loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(MEDIA_WAIT.as_secs()),
                &[gst::MessageType::Element],
            )
            .expect("room-joined for second");
        let s = msg.structure().unwrap();
        assert!(
            !(s.name() == "room-session-status" && s.get::<&str>("status") == Ok("reconnecting")),
            "the first connection dropped at the renewal"
        );
        if s.name() == "room-joined" {
            break s.get::<String>("username").unwrap();
        }
    };
    assert_eq!(joined, "second");
    assert_eq!(first.seen().errors, Vec::<String>::new());
    stop(&first.pipeline);
    stop(&second.pipeline);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_over_tls_invites_with_https_and_demo_bot_publishes_over_wss() {
    init();
    let dir = temp_dir("demo");
    let mut command = Command::new(BIN);
    command
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--tls-self-signed",
            "--tls-dir",
        ])
        .arg(&dir);
    let mut demo = Running::start(command);
    let invite = demo.until("/?room=demo").last().unwrap().trim().to_owned();
    assert!(invite.starts_with("https://127.0.0.1:"), "{invite}");
    let addr = invite
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap();
    let viewer = Viewer::new(
        &format!("wss://{addr}/ws"),
        &format!(
            "room=demo username=checker participant=demo-bot {}",
            cert_arg(&dir.join("cert.pem"))
        ),
    )
    .start();
    viewer.wait("demo-bot's frames over wss", |s| {
        s.frames.get("video_demo-bot").copied().unwrap_or(0) >= 10
    });
    stop(&viewer.pipeline);
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's nginx example (`location` blocks as documented), with this test's certificate
/// and files.
fn nginx_config(dir: &Path, cert: &Path, key: &Path, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
# One process: killing it at the end of the test leaves no worker behind.
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 443 ssl;
        ssl_certificate     {cert};
        ssl_certificate_key {key};

        location /ws {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
        }}
        location / {{
            proxy_pass http://{upstream};
            proxy_set_header Host $host;
        }}
    }}
}}
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

#[test]
fn behind_an_nginx_tls_proxy_the_invite_link_and_wss_work_from_another_machine() {
    let net = Network::new(&["srv", "b"]);
    let srv = net.address("srv").to_string();
    let dir = temp_dir("nginx");
    let (proxy_cert, _) =
        room_signaling::tls::self_signed(&dir.join("tls"), std::slice::from_ref(&srv)).unwrap();
    let public = format!("https://{srv}/");
    let (_server, printed) = start_server(
        net.command("srv", "env"),
        &["--listen", "127.0.0.1:8443", "--public-url", &public],
    );
    assert_eq!(printed.links, std::slice::from_ref(&public));
    assert!(
        !printed.lines.iter().any(|l| l.contains("WARNING")),
        "{printed:?}"
    );

    let config = dir.join("nginx.conf");
    std::fs::write(
        &config,
        nginx_config(&dir, &proxy_cert.cert, &proxy_cert.key, "127.0.0.1:8443"),
    )
    .unwrap();
    let mut nginx = net.command("srv", "nginx");
    nginx.arg("-c").arg(&config);
    let _nginx = Running::start(nginx);

    // The invite link answers through the proxy (polled: nginx takes a moment to listen).
    let curl = |url: &str| {
        let out = net
            .command("b", "curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&proxy_cert.cert)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + START_WAIT;
    while curl(&format!("{public}?room=demo")) != "200" {
        assert!(
            Instant::now() < deadline,
            "no page through nginx: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A pipeline command on another machine joins over the proxy's wss.
    let mut play = net.command("b", BIN);
    play.args(["play", "--headless", "--participant", "nobody", "--server"])
        .arg(format!("wss://{srv}/ws"))
        .arg("--tls-ca-file")
        .arg(&proxy_cert.cert);
    let mut play = Running::start(play);
    play.until("room: in room demo as ");
    drop(play);
    let _ = std::fs::remove_dir_all(&dir);
}
