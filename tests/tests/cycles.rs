//! A pipeline with roomsink and roomsrc (one participant) started and stopped 100 times leaves
//! nothing behind: no open file descriptors or threads beyond its 10th cycle's, no element
//! error, no webrtcsrc inside roomsrc after a stop, no webrtcsrc or webrtcbin alive at the end.
//! Alone in its test binary, so that the
//! process-wide counts are this test's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::TestServer;
use gst_room_tests::media::*;

const RED: Rgb = [230, 20, 20];
const BLUE: Rgb = [20, 40, 230];

/// Open file descriptors and threads of this process.
fn fds_and_threads() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    (count("/proc/self/fd"), count("/proc/self/task"))
}

/// This process's open descriptors: fd number → what it is (`socket:[inode]`, `pipe:[..]`,
/// a path), sockets described by their /proc/net entry.
fn open_fds() -> BTreeMap<u32, String> {
    let sockets = socket_table();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?.display().to_string();
            let described = target
                .strip_prefix("socket:[")
                .and_then(|inode| sockets.get(inode.trim_end_matches(']')))
                .cloned()
                .unwrap_or(target);
            Some((fd, described))
        })
        .collect()
}

/// Socket inode → "proto local remote state", from /proc/net.
fn socket_table() -> BTreeMap<String, String> {
    let mut table = BTreeMap::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/net/{proto}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 {
                table.insert(
                    f[9].to_owned(),
                    format!("{proto} {} {} st={}", f[1], f[2], f[3]),
                );
            }
        }
    }
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 6 {
            table.insert(f[6].to_owned(), format!("unix {}", f.get(7).unwrap_or(&"")));
        }
    }
    table
}

fn webrtcsrc_children(roomsrc: &gst::Element) -> usize {
    roomsrc
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .children()
        .iter()
        .filter(|c| c.factory().is_some_and(|f| f.name() == "webrtcsrc"))
        .count()
}

#[test]
fn a_hundred_start_stop_cycles_leave_nothing_behind() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    // Someone to play, so that every cycle creates a webrtcsrc. In another process, as a real
    // participant is: what this process owns is then only the cycling pipeline. (In-process,
    // the publisher's webrtcsink 0.15.4 keeps about one unix socket and one eventfd per ended
    // viewer session, which would hide what this test measures.)
    let _alice = GstLaunch::start(&publisher_line(&url, "cycles", "alice", BLUE, ""));
    let line = format!(
        "{} roomsrc name=room server-url={url} room=cycles username=bot",
        publisher_line(&url, "cycles", "bot", RED, "")
    );
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let roomsrc = pipeline.by_name("room").unwrap();
    let sessions = track_sessions(&pipeline);
    let bus = pipeline.bus().unwrap();
    let mut baseline = None;
    for cycle in 0..100 {
        pipeline.set_state(gst::State::Playing).unwrap();
        // wait_for_event fails on any error message before the one awaited.
        wait_for_event(&pipeline, "room-session-status", |s| {
            s.get::<&str>("status") == Ok("playing") && s.get::<&str>("peer") == Ok("alice")
        });
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(
            webrtcsrc_children(&roomsrc),
            0,
            "cycle {cycle}: orphan webrtcsrc"
        );
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(err) = msg.view() {
                panic!("cycle {cycle}: {} ({:?})", err.error(), err.debug());
            }
        }
        if cycle == 9 {
            // Thread pools and lazily created runtimes have settled by now.
            baseline = Some((fds_and_threads(), open_fds()));
        }
    }
    // Every webrtcsrc and webrtcbin the cycles created is gone (not merely out of roomsrc).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive = alive(&sessions);
        if alive.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still alive: {alive:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Some teardown finishes just after NULL returns (the blocking pool's idle threads, ICE
    // agents), so the counts are polled until they are back; a leak of one thread or socket per
    // cycle would keep them about 90 above the baseline for ever.
    //
    // The margin is 30, not less (UPSTREAM.md: "The transportreceivebin leak"). About one run in ten (under load; seen 3 in 30 with the test
    // pinned to one core) a webrtcbin leaves part of itself behind in GStreamer 1.22: the
    // webrtcbin and its webrtcsrc are finalized (checked above), but one of its
    // `transportreceivebin`s stays referenced (2 refs) with its `nicesrc` — and so its ICE
    // agent with every host candidate socket: a UDP and a TCP-passive socket per local address
    // (192.0.2.2, fd00::2 and fe80::… here), plus the agent's eventfds — 7 to 11 descriptors
    // per agent, never closed (still there 10 s later). Seen once per run
    // at most, in a random cycle; nothing of the room elements holds it (they never touch the
    // transports). The failure message lists the new descriptors with their /proc/net entries.
    let ((base_fds, base_threads), base_list) = baseline.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (fds, threads) = fds_and_threads();
        if fds <= base_fds + 30 && threads <= base_threads + 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds {base_fds} → {fds}, threads {base_threads} → {threads}; new descriptors: {:#?}",
            new_fds(&base_list)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Weak references to every webrtcsrc and webrtcbin added anywhere in `pipeline`.
fn track_sessions(pipeline: &gst::Pipeline) -> Arc<Mutex<Vec<gst::glib::WeakRef<gst::Element>>>> {
    let tracked = Arc::new(Mutex::new(Vec::new()));
    let track = tracked.clone();
    pipeline.connect_deep_element_added(move |_, _, element| {
        let factory = element.factory().map(|f| f.name().to_string());
        if matches!(factory.as_deref(), Some("webrtcsrc" | "webrtcbin")) {
            track.lock().unwrap().push(element.downgrade());
        }
    });
    tracked
}

/// The tracked elements still alive: name, references (besides this look) and parent.
fn alive(tracked: &Mutex<Vec<gst::glib::WeakRef<gst::Element>>>) -> Vec<String> {
    tracked
        .lock()
        .unwrap()
        .iter()
        .filter_map(|weak| weak.upgrade())
        .map(|e| {
            let parent = e.parent().map(|p| p.name().to_string());
            format!(
                "{} ({} refs, parent {parent:?})",
                e.name(),
                e.ref_count() - 1
            )
        })
        .collect()
}

/// Descriptors open now that were not (or were something else) in `before`.
fn new_fds(before: &BTreeMap<u32, String>) -> Vec<String> {
    open_fds()
        .into_iter()
        .filter(|(fd, what)| before.get(fd) != Some(what))
        .map(|(fd, what)| format!("{fd}: {what}"))
        .collect()
}

/// A `gst-launch-1.0` process with this build's plugin; killed on drop.
struct GstLaunch(std::process::Child);

impl GstLaunch {
    fn start(line: &str) -> GstLaunch {
        // The cdylib next to this test binary's directory: target/<profile>/libgstroom.so.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        assert!(
            dir.join("libgstroom.so").exists(),
            "build the plugin first: cargo build -p gst-plugin-room ({})",
            dir.display()
        );
        let child = std::process::Command::new("gst-launch-1.0")
            .args(line.split_whitespace())
            .env("GST_PLUGIN_PATH", dir)
            .env("GST_REGISTRY", dir.join("gst-room-test-registry.bin"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 runs");
        GstLaunch(child)
    }
}

impl Drop for GstLaunch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
