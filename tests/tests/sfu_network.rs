//! Rooms whose media goes through the server (`--media sfu`) across real networks: the server,
//! the publisher and the viewers in network namespaces of their own (tests/src/netns.rs), each
//! a `netpeer` process (tests/src/bin/netpeer.rs); bytes counted and losses made with nftables.
//!
//! - the publisher's uplink with 5 viewers against 1: flat through the server, ~5× in a mesh
//!   room (both figures printed);
//! - 5 % loss on one viewer's downlink leaves another viewer's frame rate as it was;
//! - the server process killed and started again: the elements rejoin, media resumes;
//! - a publisher and a viewer whose networks drop all UDP reach the server over ICE-TCP
//!   (`--media-tcp-port`), and the viewer decodes the publisher's colour.
//!
//! Needs root and nftables (CI runs as root; scripts/setup.sh installs nftables). Run with
//! `cargo test --workspace --test sfu_network -- --nocapture` to see the figures.

use std::time::{Duration, Instant};

use gst_room_tests::netns::Network;
use gst_room_tests::netpeer::*;

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");
/// The room server's port in its namespace.
const SERVER_PORT: u16 = 8443;
/// The media engine's UDP port (the default of `--media-port`).
const MEDIA_PORT: u16 = 7882;

/// One test at a time: each measures media on a 2-core machine, and two conferences at once
/// would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The room server in `host` with `--media MEDIA` (sfu: its engine on udp MEDIA_PORT of the
/// same address), and its WebSocket URL.
fn start_server(net: &Network, host: &str, media: &str) -> (Peer, String) {
    start_server_with(net, host, media, &[])
}

/// [`start_server`] with more server flags.
fn start_server_with(net: &Network, host: &str, media: &str, flags: &[&str]) -> (Peer, String) {
    let listen = format!("{}:{SERVER_PORT}", net.address(host));
    let port = MEDIA_PORT.to_string();
    let mut args = vec![
        "server",
        &listen,
        "--max-participants",
        "8",
        "--media",
        media,
        "--media-port",
        &port,
    ];
    args.extend(flags);
    let mut server = Peer::spawn(net, host, NETPEER, &args);
    server.wait("the server to listen", |l| {
        l.iter().any(|l| l.starts_with("listening"))
    });
    (server, format!("ws://{listen}/ws"))
}

/// A viewer of alice in `host`, with extra roomsrc properties.
fn viewer(net: &Network, host: &str, url: &str, name: &str, props: &[&str]) -> Peer {
    let mut args = vec!["view", url, "net", name, "alice"];
    args.extend(props);
    Peer::spawn(net, host, NETPEER, &args)
}

/// Waits `over` while the viewer keeps reporting, and returns what it decoded meanwhile.
fn measure(viewer: &mut Peer, over: Duration) -> Window {
    let from = viewer_now(viewer);
    std::thread::sleep(over);
    window_when_passed(viewer, from, from + over.as_millis() as u64)
}

/// Asserts that the viewer's media comes from the server: its selected ICE pair (reported once
/// a second) ends at the server's address.
fn assert_through_server(viewer: &mut Peer, net: &Network) {
    let server = format!(" {}", net.address("srv"));
    let lines = viewer.wait("a selected candidate pair", |l| {
        l.iter().any(|l| l.starts_with("pair "))
    });
    let pair = lines.iter().rfind(|l| l.starts_with("pair ")).unwrap();
    assert!(pair.ends_with(&server), "selected pair: {pair}");
}

// ---------------------------------------------------------------------------------------------
// The publisher's uplink

/// The UDP bytes `pub` sends, counted by nftables (table `uplink`, counter `media_out`).
fn count_uplink(net: &Network) {
    nft(
        net,
        "pub",
        "table inet uplink {
           counter media_out { }
           chain out { type filter hook output priority 0; meta l4proto udp counter name \"media_out\"; }
         }",
    );
}

/// The publisher's UDP uplink over `over`, kbit/s.
fn uplink_kbps(net: &Network, over: Duration) -> f64 {
    let (_, before) = nft_counter(net, "pub", "uplink", "media_out");
    let start = Instant::now();
    std::thread::sleep(over);
    let (_, after) = nft_counter(net, "pub", "uplink", "media_out");
    (after - before) as f64 * 8.0 / start.elapsed().as_secs_f64() / 1000.0
}

/// How long a conference runs after viewers joined before the uplink is measured.
const SETTLE: Duration = Duration::from_secs(5);

/// The publisher's uplink with one viewer, then with five (kbit/s), in a room with
/// `--media MEDIA`. The video is encoded before roomsink at a constant 500 kbit/s: roomsink's
/// own encoder would follow congestion control, whose estimate dips for a while whenever
/// viewers join (to 126-335 kbit/s here, in both kinds of room), and the two figures would
/// not be of the same stream.
fn publisher_uplink(media: &str) -> (f64, f64) {
    let net = Network::new(&["srv", "pub", "view"]);
    count_uplink(&net);
    let (_server, url) = start_server(&net, "srv", media);
    let _publisher = Peer::spawn(
        &net,
        "pub",
        NETPEER,
        &["publish", &url, "net", "alice", "moving-vp8"],
    );
    let mut viewers = vec![viewer(&net, "view", &url, "v1", &[])];
    viewers[0].wait("30 frames", |l| frames(l).len() >= 30);
    // The first seconds (keyframes for the new session) pass; then the uplink is measured.
    std::thread::sleep(SETTLE);
    let one = uplink_kbps(&net, Duration::from_secs(10));
    for i in 2..=5 {
        viewers.push(viewer(&net, "view", &url, &format!("v{i}"), &[]));
    }
    for v in &mut viewers {
        v.wait("30 frames", |l| frames(l).len() >= 30);
    }
    std::thread::sleep(SETTLE);
    let decoded: Vec<usize> = viewers.iter().map(|v| frames(&v.lines()).len()).collect();
    let five = uplink_kbps(&net, Duration::from_secs(10));
    // All five kept decoding while the uplink was measured (30 fps; a loaded machine decodes
    // fewer, hence the generous bound).
    for (v, before) in viewers.iter().zip(decoded) {
        let during = frames(&v.lines()).len() - before;
        assert!(
            during >= 60,
            "a viewer decoded {during} frames in 10 s ({media})"
        );
    }
    println!(
        "{media}: publisher uplink 1 viewer {one:.0} kbit/s, 5 viewers {five:.0} kbit/s (×{:.2})",
        five / one,
    );
    (one, five)
}

#[test]
fn the_publishers_uplink_does_not_grow_with_viewers_through_the_server_but_does_in_a_mesh() {
    let _serial = one_at_a_time();
    let (sfu_one, sfu_five) = publisher_uplink("sfu");
    let (mesh_one, mesh_five) = publisher_uplink("mesh");
    let (sfu, mesh) = (sfu_five / sfu_one, mesh_five / mesh_one);
    println!(
        "publisher uplink, 5 viewers / 1 viewer: sfu ×{sfu:.2} ({sfu_one:.0} → {sfu_five:.0} \
         kbit/s), mesh ×{mesh:.2} ({mesh_one:.0} → {mesh_five:.0} kbit/s)"
    );
    assert!(sfu_one > 100.0, "no media measured: {sfu_one:.0} kbit/s");
    assert!(sfu <= 1.3, "sfu: ×{sfu:.2}");
    // The mesh figure only shows that the measurement tells the two apart (~5×).
    assert!(mesh > 2.5, "mesh: ×{mesh:.2}");
}

// ---------------------------------------------------------------------------------------------
// Loss on one viewer's downlink

#[test]
fn five_percent_loss_on_one_viewers_downlink_does_not_lower_another_viewers_frame_rate() {
    let _serial = one_at_a_time();
    let net = Network::new(&["srv", "pub", "clean", "lossy"]);
    let (_server, url) = start_server(&net, "srv", "sfu");
    let _publisher = Peer::spawn(
        &net,
        "pub",
        NETPEER,
        &["publish", &url, "net", "alice", "moving"],
    );
    let mut bob = viewer(&net, "clean", &url, "bob", &[]);
    // The lossy viewer is one across the internet (README: latency=200).
    let mut carol = viewer(&net, "lossy", &url, "carol", &["latency=200"]);
    bob.wait("30 frames", |l| frames(l).len() >= 30);
    carol.wait("30 frames", |l| frames(l).len() >= 30);
    std::thread::sleep(Duration::from_secs(5));
    let clean = measure(&mut bob, Duration::from_secs(10));
    println!("bob, carol without loss: {clean:?}");

    // 5 % of what reaches carol's host is lost (media, and her signaling's TCP segments).
    nft(
        &net,
        "lossy",
        "table inet loss {
           counter lost { }
           chain in { type filter hook input priority 0; numgen random mod 100 < 5 counter name \"lost\" drop; }
         }",
    );
    // bob's rate from the moment the loss begins: carol's keyframe requests and NACKs reach the
    // server from then on.
    let (bob_from, carol_from) = (viewer_now(&bob), viewer_now(&carol));
    let over = Duration::from_secs(20);
    std::thread::sleep(over);
    let bob_lossy = window_when_passed(&mut bob, bob_from, bob_from + over.as_millis() as u64);
    let carol_lossy =
        window_when_passed(&mut carol, carol_from, carol_from + over.as_millis() as u64);
    let (lost, _) = nft_counter(&net, "lossy", "loss", "lost");
    println!("bob while carol loses 5 %: {bob_lossy:?}");
    println!("carol losing 5 % ({lost} packets dropped): {carol_lossy:?}");
    println!(
        "frames per second: bob {:?}, carol {:?}",
        frames_per_second(&bob.lines(), bob_from, 20),
        frames_per_second(&carol.lines(), carol_from, 20)
    );
    assert!(lost > 50, "the loss rule dropped only {lost} packets");
    assert!(
        bob_lossy.fps >= 0.8 * clean.fps,
        "bob's frame rate fell while carol lost packets: {:.1} → {:.1} fps",
        clean.fps,
        bob_lossy.fps
    );
    assert!(
        bob_lossy.longest_freeze_ms <= 1000,
        "bob froze while carol lost packets: {bob_lossy:?}"
    );
    // carol herself still gets a picture (repairs from the server's buffer, keyframes).
    assert!(carol_lossy.fps >= 5.0, "carol: {carol_lossy:?}");
    assert_through_server(&mut bob, &net);
    assert_through_server(&mut carol, &net);
}

// ---------------------------------------------------------------------------------------------
// Server restart

/// Lines of a netpeer's `event` output whose structure is named `name` and contains `text`.
fn events_after<'a>(lines: &'a [String], after: u64, name: &str, text: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| {
            let mut words = l.split(' ');
            words.next() == Some("event")
                && words
                    .next()
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .is_some_and(|ms| ms > after)
                && l.contains(name)
                && l.contains(text)
        })
        .collect()
}

/// Whether a netpeer's events show it reconnecting, then joined again.
fn rejoined(lines: &[String]) -> bool {
    events_after(lines, 0, "room-session-status", "reconnecting")
        .first()
        .and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
        .is_some_and(|since| {
            !events_after(lines, since, "room-session-status", "joined").is_empty()
        })
}

#[test]
fn a_killed_and_restarted_server_gets_its_sfu_room_back_within_10_s() {
    let _serial = one_at_a_time();
    let net = Network::new(&["srv", "pub", "view"]);
    let (mut server, url) = start_server(&net, "srv", "sfu");
    let mut publisher = Peer::spawn(
        &net,
        "pub",
        NETPEER,
        &["publish", &url, "net", "alice", "ff0000"],
    );
    let mut bob = viewer(&net, "view", &url, "bob", &[]);
    const RED: [u8; 3] = [255, 0, 0];
    bob.wait("30 red frames", |l| {
        frames(l).iter().filter(|f| close_to(f.rgb, RED)).count() >= 30
    });

    // The server process dies (its sockets close with it) and a new one starts on the same
    // address and media port, with no memory of the room.
    let killed = viewer_now(&bob);
    server.kill();
    bob.wait("the viewer to notice", |l| {
        !events_after(l, killed, "room-session-status", "reconnecting").is_empty()
    });
    let (_server, _) = start_server(&net, "srv", "sfu");
    let back = Instant::now();
    let restarted = viewer_now(&bob);
    let lines = bob.wait("15 red frames after the restart", |l| {
        frames(l)
            .iter()
            .filter(|f| f.ms > restarted && close_to(f.rgb, RED))
            .count()
            >= 15
    });
    let took = back.elapsed();
    println!(
        "sfu room back after a server restart: 15 red frames {:.2} s after the new server listened",
        took.as_secs_f64()
    );
    // Both elements rejoined, and alice published again to the new server, which carries the
    // media (the viewer's selected pair ends at the server's address): the new server has no
    // memory of the room, so red frames through it come from a new ingest. (Whether the viewer
    // hears `room-published` or finds alice's stream in the room's state depends on which of
    // the two rejoins first.)
    assert!(
        rejoined(&lines),
        "the viewer did not rejoin: {}",
        tail(&lines)
    );
    publisher.wait("the publisher to rejoin", rejoined);
    assert_through_server(&mut bob, &net);
    assert!(
        took <= Duration::from_secs(10),
        "media back only {:.1} s after the restart",
        took.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Networks that drop UDP

/// Drops every UDP packet into and out of `host` (but on its loopback), counting them
/// (table `noudp`, counter `dropped`), and counts the TCP packets from the media port
/// (counter `media_tcp`).
fn drop_udp(net: &Network, host: &str) {
    nft(
        net,
        host,
        &format!(
            "table inet noudp {{
               counter dropped {{ }}
               counter media_tcp {{ }}
               chain in {{
                 type filter hook input priority 0;
                 iifname != \"lo\" meta l4proto udp counter name \"dropped\" drop;
                 tcp sport {MEDIA_PORT} counter name \"media_tcp\";
               }}
               chain out {{
                 type filter hook output priority 0;
                 oifname != \"lo\" meta l4proto udp counter name \"dropped\" drop;
               }}
             }}"
        ),
    );
}

#[test]
fn participants_whose_network_drops_udp_reach_the_server_over_ice_tcp() {
    let _serial = one_at_a_time();
    let net = Network::new(&["srv", "pub", "view"]);
    drop_udp(&net, "pub");
    drop_udp(&net, "view");
    let tcp_port = MEDIA_PORT.to_string();
    let (_server, url) = start_server_with(&net, "srv", "sfu", &["--media-tcp-port", &tcp_port]);
    let _publisher = Peer::spawn(
        &net,
        "pub",
        NETPEER,
        &["publish", &url, "net", "alice", "e61414"],
    );
    let mut bob = viewer(&net, "view", &url, "bob", &[]);
    let lines = bob.wait("30 frames", |l| frames(l).len() >= 30);
    let last = *frames(&lines).last().unwrap();
    assert!(
        close_to(last.rgb, [230, 20, 20]),
        "the viewer decoded {:?}, not the publisher's red",
        last.rgb
    );
    assert_through_server(&mut bob, &net);
    // Both reached the server over TCP only: their UDP was dropped (ICE tried it), and the
    // media port sent them TCP.
    for host in ["pub", "view"] {
        let (udp_dropped, _) = nft_counter(&net, host, "noudp", "dropped");
        let (tcp_packets, tcp_bytes) = nft_counter(&net, host, "noudp", "media_tcp");
        println!(
            "{host}: {udp_dropped} UDP packets dropped, {tcp_packets} TCP packets ({tcp_bytes} bytes) from the media port"
        );
        assert!(udp_dropped > 0, "{host}: no UDP tried");
        assert!(
            tcp_packets > 0,
            "{host}: nothing from the media port over TCP"
        );
    }
}
