//! A participant (or the room server) as its own process, for tests across network namespaces
//! (`ip netns exec NS netpeer …`): a process runs in one namespace, so each host of a test
//! network gets one. It prints what it sees as lines on stdout, timestamped with its own
//! monotonic clock in milliseconds since it started, for the test to parse:
//!
//! ```text
//! netpeer server ADDR [--turn-secret S --turn-url URL] [--max-participants N]
//!                [--media sfu --media-port PORT [--media-tcp-port PORT]]   "listening ADDR";
//!     with `--media sfu` media goes through the server, its engine on udp ADDR's address and
//!     PORT (and ICE over TCP on the TCP port, when given)
//! netpeer publish URL ROOM USER SOURCE [roomsink props]  "event <room-* structure>"; SOURCE is
//!     RRGGBB (a solid colour, 320x240@30) or `moving` (a scrolling test pattern, 320x240@30,
//!     which gives the encoder real work and congestion control something to adapt) or
//!     `moving640` (the same at 640x480) or `moving-vp8` (the 320x240 one encoded before
//!     roomsink, by a vp8enc at a constant 500 kbit/s: no congestion control changes its rate),
//!     plus a tone;
//!     "bitrate MS BPS" (each video encoder's target bitrate, set by congestion control, once a
//!     second)
//! netpeer view URL ROOM USER PUBLISHER [roomsrc props]   "frame MS R G B W H" per decoded video
//!     frame (centre colour, size),
//!     "audio MS" per decoded audio buffer, "eos MS PAD" when a roomsrc pad ends,
//!     "pair MS LOCAL-TYPE LOCAL-ADDRESS REMOTE-TYPE REMOTE-ADDRESS" (the selected ICE
//!     candidate pair, once a second), "received MS BYTES" (RTP bytes received so far, audio
//!     and video, once a second),
//!     "event MS <room-* structure>"
//! ```
//! Any pipeline error prints "error …" and exits with status 1. It runs until killed.

use std::io::Write;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::media;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn ms() -> u128 {
    START.elapsed().as_millis()
}

/// One line on stdout, flushed at once (the test reads it while this process runs).
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    LazyLock::force(&START);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["server", addr, rest @ ..] => server(addr, rest),
        ["publish", url, room, user, source, props @ ..] => {
            let moving = |w, h| {
                format!(
                    "videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! \
                     video/x-raw,width={w},height={h},framerate=30/1"
                )
            };
            let video = match *source {
                "moving" => moving(320, 240),
                "moving-vp8" => format!(
                    "{} ! vp8enc deadline=1 end-usage=cbr target-bitrate=500000",
                    moving(320, 240)
                ),
                "moving640" => moving(640, 480),
                colour => format!(
                    "videotestsrc is-live=true pattern=solid-color foreground-color={} ! \
                     video/x-raw,width=320,height=240,framerate=30/1",
                    media::argb(parse_colour(colour))
                ),
            };
            let line = format!(
                "{video} ! roomsink name=sink server-url={url} room={room} username={user} {} \
                 audiotestsrc is-live=true wave=sine ! sink.",
                props.join(" ")
            );
            run(&line, Role::Publisher);
        }
        ["view", url, room, user, publisher, props @ ..] => view(url, room, user, publisher, props),
        _ => {
            eprintln!("usage: see the doc comment of tests/src/bin/netpeer.rs");
            std::process::exit(2);
        }
    }
}

fn parse_colour(hex: &str) -> media::Rgb {
    let v = u32::from_str_radix(hex, 16).expect("colour RRGGBB");
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn server(addr: &str, flags: &[&str]) {
    let mut config = room_signaling::Config::default();
    let (mut secret, mut urls) = (None, Vec::new());
    let (mut sfu, mut media_port) = (false, room_signaling::media::DEFAULT_MEDIA_PORT);
    let mut media_tcp_port = None;
    for pair in flags.chunks(2) {
        match pair {
            ["--media", "sfu"] => sfu = true,
            ["--media", "mesh"] => sfu = false,
            ["--media-port", p] => media_port = p.parse().unwrap(),
            ["--media-tcp-port", p] => media_tcp_port = Some(p.parse().unwrap()),
            ["--turn-secret", s] => secret = Some(s.to_string()),
            ["--turn-url", u] => urls.push(u.to_string()),
            ["--max-participants", n] => config.max_participants = n.parse().unwrap(),
            _ => panic!("unknown server flags {pair:?}"),
        }
    }
    if let Some(secret) = secret {
        config.turn = Some(room_signaling::turn::TurnRest {
            secret: secret.into(),
            urls,
            ttl: room_signaling::turn::DEFAULT_TURN_TTL,
        });
    }
    if sfu {
        let ip = addr.parse::<std::net::SocketAddr>().unwrap().ip();
        config.media =
            room_signaling::media::MediaConfig::Sfu(room_signaling::media::SfuSettings {
                bind: std::net::SocketAddr::new(ip, media_port),
                tcp_bind: media_tcp_port.map(|port| std::net::SocketAddr::new(ip, port)),
                advertised: Vec::new(),
            });
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        say(format!("listening {}", listener.local_addr().unwrap()));
        room_signaling::run(listener, config, std::future::pending())
            .await
            .unwrap();
    });
}

fn view(url: &str, room: &str, user: &str, publisher: &str, props: &[&str]) {
    // A permanent silent branch stands for the rest of an application: the publisher's EOS
    // (if any) must be seen on its pad, not end the process.
    let line = format!(
        "roomsrc name=room server-url={url} room={room} username={user} participant={publisher} {} \
         audiotestsrc is-live=true wave=silence ! fakesink",
        props.join(" ")
    );
    run(&line, Role::Viewer);
}

#[derive(PartialEq)]
enum Role {
    Publisher,
    Viewer,
}

/// Runs `line`; for a viewer, attaches frame/audio reporters to roomsrc's pads and reports
/// the selected candidate pair of its webrtcbins; for a publisher, reports its encoders'
/// bitrates.
fn run(line: &str, role: Role) {
    media::init();
    let pipeline = gst::parse::launch(line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    if role == Role::Publisher {
        report_bitrates(&pipeline);
    }
    if role == Role::Viewer {
        let room = pipeline.by_name("room").unwrap();
        let weak = pipeline.downgrade();
        room.connect_pad_added(move |_, pad| {
            if let Some(pipeline) = weak.upgrade() {
                report_pad(&pipeline, pad);
            }
        });
        let webrtcbins = std::sync::Arc::new(std::sync::Mutex::new(Vec::<gst::Element>::new()));
        let found = webrtcbins.clone();
        pipeline.connect_deep_element_added(move |_, _, element| {
            if element.factory().is_some_and(|f| f.name() == "webrtcbin") {
                found.lock().unwrap().push(element.clone());
            }
        });
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let bins = webrtcbins.lock().unwrap().clone();
                for bin in bins {
                    report_pair(&bin);
                }
            }
        });
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Error(err) => {
                say(format!(
                    "error {} from {:?} ({:?})",
                    err.error(),
                    err.src().map(|s| s.path_string()),
                    err.debug()
                ));
                std::process::exit(1);
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name().starts_with("room-")) {
                    say(format!("event {} {s}", ms()));
                }
            }
            gst::MessageView::Eos(_) => say(format!("eos {} pipeline", ms())),
            _ => {}
        }
    }
}

/// `bitrate MS BPS` once a second for each VP8 encoder of roomsink: the shared one, or
/// webrtcsink's (one per viewer session) with `encode-per-viewer=true`; congestion control
/// sets their target bitrate.
fn report_bitrates(pipeline: &gst::Pipeline) {
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst::Bin>()
        .unwrap();
    let webrtcsink = sink.by_name("webrtcsink").unwrap();
    let encoders = std::sync::Arc::new(std::sync::Mutex::new(Vec::<gst::Element>::new()));
    let found = encoders.clone();
    webrtcsink.connect("encoder-setup", false, move |args| {
        let encoder = args[3].get::<gst::Element>().unwrap();
        if args[1].get::<String>().unwrap() != "discovery" && encoder.has_property("target-bitrate")
        {
            found.lock().unwrap().push(encoder);
        }
        // Not handled here: roomsink's and webrtcsink's own configuration still applies.
        Some(false.to_value())
    });
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let shared = sink
                .iterate_recurse()
                .into_iter()
                .flatten()
                .filter(|e| e.factory().is_some_and(|f| f.name() == "vp8enc"));
            for encoder in encoders.lock().unwrap().clone().into_iter().chain(shared) {
                let bps = encoder.property::<i32>("target-bitrate");
                say(format!("bitrate {} {bps}", ms()));
            }
        }
    });
}

/// `frame`/`audio`/`eos` lines for one of roomsrc's pads.
fn report_pad(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let name = pad.name().to_string();
    let video = name.starts_with("video");
    let (branch, appsink) = media::decode_branch(pipeline, video);
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if video {
                    let [r, g, b] =
                        media::region_colour(&sample, (0.25, 0.25, 0.75, 0.75)).unwrap_or_default();
                    let (w, h) = sample
                        .caps()
                        .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                        .map_or((0, 0), |i| (i.width(), i.height()));
                    say(format!("frame {} {r} {g} {b} {w} {h}", ms()));
                } else {
                    say(format!("audio {}", ms()));
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    branch.static_pad("sink").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && event.type_() == gst::EventType::Eos
            {
                say(format!("eos {} {name}", ms()));
            }
            gst::PadProbeReturn::Ok
        },
    );
    branch.sync_state_with_parent().unwrap();
    pad.link(&branch.static_pad("sink").unwrap()).unwrap();
}

/// `pair MS LOCAL-TYPE LOCAL-ADDRESS REMOTE-TYPE REMOTE-ADDRESS`: webrtcbin's selected
/// candidate pair (its stats carry the two candidates of the selected pair only).
fn report_pair(webrtcbin: &gst::Element) {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    if promise.wait() != gst::PromiseResult::Replied {
        return;
    }
    let Some(stats) = promise.get_reply() else {
        return;
    };
    let (mut local, mut remote, mut received) = (None, None, 0u64);
    for (_, value) in stats.iter() {
        let Ok(s) = value.get::<gst::Structure>() else {
            continue;
        };
        if s.name() == "inbound-rtp" {
            received += s.get::<u64>("bytes-received").unwrap_or(0);
        }
        let (Ok(kind), Ok(address), Ok(id)) = (
            s.get::<String>("candidate-type"),
            s.get::<String>("address"),
            s.get::<String>("id"),
        ) else {
            continue;
        };
        // GStreamer 1.22 swaps the structure names (a "remote-candidate" structure holds the
        // local candidate); the ids (`ice-candidate-local_…`) are right.
        if id.starts_with("ice-candidate-local") {
            local = Some(format!("{kind} {address}"));
        } else if id.starts_with("ice-candidate-remote") {
            remote = Some(format!("{kind} {address}"));
        }
    }
    if let (Some(local), Some(remote)) = (local, remote) {
        say(format!("pair {} {local} {remote}", ms()));
    }
    say(format!("received {} {received}", ms()));
}
