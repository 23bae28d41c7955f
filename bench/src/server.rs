//! `gst-room bench server`: the room server under N simulated participants, and the stock
//! signalling server under the same load.
//!
//! ```text
//! process 1: gst-room server --max-participants 3      (or: gst-room bench anchor-server)
//! process 2: gst-room bench load --protocol room|anchor  (N WebSockets, rooms of 3)
//! this one:  starts both per run, reads the load generator's result line
//! ```
//!
//! The load generator, per run:
//! 1. joins: everyone connects, gets the welcome and joins its room (`state` back), at most
//!    `--concurrency` handshakes at a time; seat 0 of every room first, then seats 1 and 2.
//!    Anchor: connect, welcome, `setPeerStatus` (producer for seat 0; the others register
//!    without a role, as webrtcsrc does with a producer id) — the stock server has no rooms and
//!    no join reply, so its join ends at the welcome. The CPU time the servers and the load
//!    generator itself spent in this phase is reported per join: both share the machine's
//!    cores, so a load generator that costs as much as the server caps the join rate of both
//!    sides alike;
//! 2. seat 0 publishes; memory: server RSS after minus before, divided by N (/proc/PID/status);
//! 3. chat (ours only: the stock server has none): `--rate` messages a second, rooms and
//!    senders in turn, each stamped with its send time; fan-out latency is measured at the
//!    two other participants;
//! 4. session relay at `--rate` sessions a second: a viewer asks to play (`play`; anchor:
//!    `startSession`), the publisher gets `session-request` (anchor: `startSession`) — the
//!    request latency — and sends a ~1.5 KB offer stamped with its send time, which the viewer
//!    gets as `sdp` (anchor: `peer`) — the SDP relay latency; the viewer then stops the session;
//! 5. connections still open at the end are the connections held.
//!
//! All times are taken in the load generator's process, on one monotonic clock.
//!
//! With `--nodes N --redis URL`: N `gst-room server --redis` processes share that Redis and the
//! load generator spreads the participants over them. Even rooms sit on one node (pairs on the
//! same node), odd rooms have their seats on consecutive nodes (pairs across nodes); each
//! latency sample is counted as same-node or cross-node by where its two ends are connected.
//! The anchor is then one node without Redis under the same load, in the same run (the stock
//! server is not run). Memory is the sum over the nodes (Redis itself not included).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use async_tungstenite::tokio::client_async_with_config;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::StreamExt;
use room_protocol::{ClientMessage, SdpType, ServerMessage, SessionDescription};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Child, Figure, Summary, median, ms, process_cpu, process_rss};

/// Prefix of the load generator's result line.
const RESULT: &str = "result ";
/// Participants per room (the room server's default capacity).
const ROOM_SIZE: usize = 3;
/// The load generator's read buffer per connection. tungstenite's default (128 KiB) is zeroed
/// on every read, and a fresh one faults its pages in on the first: with it the load
/// generator spent a third of its CPU in `memset` and page faults and cost more per join than
/// the server it measures (both share the machine). The largest message it reads is an SDP of
/// ~1.5 KB; a larger frame still grows the buffer.
const READ_BUFFER: usize = 4 * 1024;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Simulated participants (rounded down to rooms of 3).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(3..))]
    participants: u32,
    /// Repetitions (each with fresh server processes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Chat messages, and session setups, per second (all rooms together).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of chat and seconds of session relay per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Most WebSocket handshakes + joins in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Skip the anchor (the stock signalling server; with `--nodes`, the single node without
    /// Redis, which cannot hold more than a process's open files).
    #[arg(long)]
    no_anchor: bool,
    /// Server nodes sharing `--redis` (the anchor is then one node without Redis).
    #[arg(long, default_value_t = 1, requires = "redis", value_parser = clap::value_parser!(u32).range(1..=64))]
    nodes: u32,
    /// The Redis of the nodes, `redis://HOST:PORT[/DB]` (with `--nodes`).
    #[arg(long)]
    redis: Option<String>,
    /// Load generator processes, each with its own rooms (default: one per
    /// 15 000 participants, as a process may hold 20 000 open files here).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    generators: Option<u32>,
}

/// Participants one load generator process holds by default (the machine allows 20 000 open
/// files per process).
const PER_GENERATOR: u32 = 15_000;

impl ServerArgs {
    /// How many load generator processes share the participants.
    fn generators(&self) -> u32 {
        self.generators
            .unwrap_or(self.participants.div_ceil(PER_GENERATOR))
            .clamp(1, (self.participants / ROOM_SIZE as u32).max(1))
    }
}

/// Which server the load generator speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Protocol {
    /// The gst-room protocol.
    Room,
    /// The stock gst-webrtc-signalling protocol.
    Anchor,
}

/// Flags of the hidden `gst-room bench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// The nodes' WebSocket URLs (one per node, repeated).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Room names are PREFIX-INDEX (unique per run: nodes sharing a Redis outlive nothing).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    #[arg(long)]
    participants: u32,
    #[arg(long)]
    rate: f64,
    #[arg(long)]
    seconds: f64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The server processes (one per node, repeated), for their memory.
    #[arg(long, required = true)]
    server_pid: Vec<u32>,
}

/// What one load run measured (the load generator's result line).
#[derive(Debug, Default, Serialize, Deserialize)]
struct LoadResult {
    participants: usize,
    joined: usize,
    join_seconds: f64,
    join_ms: Vec<f64>,
    /// CPU seconds the servers, and this load generator, used during the join phase.
    join_cpu_servers: f64,
    join_cpu_load: f64,
    rss_before: u64,
    rss_after: u64,
    chat_sent: usize,
    chat_ms: Vec<f64>,
    sessions_requested: usize,
    request_ms: Vec<f64>,
    sdp_ms: Vec<f64>,
    /// The samples above whose two ends are connected to different nodes.
    chat_cross_ms: Vec<f64>,
    request_cross_ms: Vec<f64>,
    sdp_cross_ms: Vec<f64>,
    held: usize,
    errors: usize,
}

pub fn run(args: ServerArgs) -> anyhow::Result<Vec<Figure>> {
    if let Some(redis) = args.redis.clone() {
        return run_nodes(&args, &redis);
    }
    let mut ours = Vec::new();
    let mut anchor = Vec::new();
    for run in 0..args.runs {
        ours.push(
            one_run(&args, Protocol::Room).with_context(|| format!("run {}: ours", run + 1))?,
        );
        if !args.no_anchor {
            anchor.push(
                one_run(&args, Protocol::Anchor)
                    .with_context(|| format!("run {}: anchor", run + 1))?,
            );
        }
    }
    Ok(figures(&ours, &anchor))
}

/// `--nodes N --redis URL`: N nodes on Redis, with one node without Redis as the anchor.
fn run_nodes(args: &ServerArgs, redis: &str) -> anyhow::Result<Vec<Figure>> {
    let mut ours = Vec::new();
    let mut anchor = Vec::new();
    for run in 0..args.runs {
        let prefix = format!("b{}r{run}", std::process::id());
        let nodes = (0..args.nodes)
            .map(|i| {
                // Up to all participants may land on one node (odd rooms spread, even ones not).
                let cap = (args.participants + 64).to_string();
                let extra = [
                    "--redis",
                    redis,
                    "--node-id",
                    &format!("{prefix}n{i}"),
                    "--max-connections",
                    &cap,
                ];
                Child::room_server_with(ROOM_SIZE, &extra.map(String::from))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("run {}: starting the nodes", run + 1))?;
        ours.push(
            load_run(args, Protocol::Room, &nodes, &prefix)
                .with_context(|| format!("run {}: {} nodes", run + 1, args.nodes))?,
        );
        drop(nodes);
        if args.no_anchor {
            continue;
        }
        // The anchor holds everyone alone: lift its connection cap (at most 10 000 by default).
        let cap = [
            "--max-connections".to_owned(),
            (args.participants + 64).to_string(),
        ];
        let single = vec![Child::room_server_with(ROOM_SIZE, &cap)?];
        anchor.push(
            load_run(args, Protocol::Room, &single, "bench")
                .with_context(|| format!("run {}: one node without Redis", run + 1))?,
        );
    }
    let mut figures = figures(&ours, &anchor);
    figures.extend(cross_figures(&ours, &anchor));
    Ok(figures)
}

/// Same-node and cross-node latencies, each against the single node's figure.
fn cross_figures(ours: &[LoadResult], anchor: &[LoadResult]) -> Vec<Figure> {
    type Samples = fn(&LoadResult) -> (&Vec<f64>, &Vec<f64>);
    let kinds: [(&str, Samples); 3] = [
        ("chat_fanout_latency", |r| (&r.chat_ms, &r.chat_cross_ms)),
        ("session_request_latency", |r| {
            (&r.request_ms, &r.request_cross_ms)
        }),
        ("sdp_relay_latency", |r| (&r.sdp_ms, &r.sdp_cross_ms)),
    ];
    let mut figures = Vec::new();
    for (name, samples) in kinds {
        let all_anchor: Vec<f64> = anchor.iter().flat_map(|r| samples(r).0.clone()).collect();
        let anchor_median = median(&all_anchor);
        let cross: Vec<f64> = ours.iter().flat_map(|r| samples(r).1.clone()).collect();
        let same: Vec<f64> = ours
            .iter()
            .flat_map(|r| without(samples(r).0, samples(r).1))
            .collect();
        for (side, values) in [("same_node", same), ("cross_node", cross)] {
            if let Some(figure) = Figure::from_samples(format!("{name}_{side}"), "ms", &values) {
                figures.push(figure.with_anchor(anchor_median));
            }
        }
    }
    figures
}

/// The samples of `all` that are not in `some` (a sub-multiset of it).
fn without(all: &[f64], some: &[f64]) -> Vec<f64> {
    let mut rest: Vec<f64> = all.to_vec();
    for value in some {
        if let Some(i) = rest.iter().position(|v| v == value) {
            rest.swap_remove(i);
        }
    }
    rest
}

/// Starts a server and the load generator, returns the load generator's result.
fn one_run(args: &ServerArgs, protocol: Protocol) -> anyhow::Result<LoadResult> {
    let server = match protocol {
        Protocol::Room => Child::room_server(ROOM_SIZE)?,
        Protocol::Anchor => Child::anchor_server()?,
    };
    load_run(args, protocol, &[server], "bench")
}

/// Runs the load generators against running `servers` (`(process, WebSocket URL)` each) and
/// merges their results: each process holds its share of the rooms (its own room prefix) and
/// its share of the chat and session rate.
fn load_run(
    args: &ServerArgs,
    protocol: Protocol,
    servers: &[(Child, String)],
    room_prefix: &str,
) -> anyhow::Result<LoadResult> {
    let generators = args.generators();
    let rooms = args.participants / ROOM_SIZE as u32;
    let loads = (0..generators)
        .map(|g| {
            // Rooms dealt out evenly: the first `rooms % generators` get one more.
            let my_rooms = rooms / generators + u32::from(g < rooms % generators);
            let prefix = if generators == 1 {
                room_prefix.to_owned()
            } else {
                format!("{room_prefix}g{g}")
            };
            let load_args = load_args(
                args,
                protocol,
                servers,
                &prefix,
                my_rooms * ROOM_SIZE as u32,
                args.rate / f64::from(generators),
            );
            Child::spawn("load generator", &load_args)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Joins take well under 100 ms each even on a busy machine; the phases are timed.
    let wait = Duration::from_secs_f64(60.0 + args.participants as f64 / 20.0 + 4.0 * args.seconds);
    let mut results = Vec::new();
    // All stay connected until every one has finished (dropping one stops it).
    for load in &loads {
        let line = load.wait_line(wait, |l| l.starts_with(RESULT))?;
        let result: LoadResult = serde_json::from_str(&line[RESULT.len()..])
            .context("reading the load generator's result")?;
        results.push(result);
    }
    drop(loads);
    let result = LoadResult::merge(results);
    eprintln!(
        "server {protocol:?} ({} node(s), {generators} load process(es)): {} of {} joined in {:.2} s, chat {}/{} deliveries, sessions {} requested / {} offers relayed, {} held, {} errors",
        servers.len(),
        result.joined,
        result.participants,
        result.join_seconds,
        result.chat_ms.len(),
        result.chat_sent * (ROOM_SIZE - 1),
        result.sessions_requested,
        result.sdp_ms.len(),
        result.held,
        result.errors
    );
    Ok(result)
}

/// The command line of one `gst-room bench load` process.
fn load_args(
    args: &ServerArgs,
    protocol: Protocol,
    servers: &[(Child, String)],
    room_prefix: &str,
    participants: u32,
    rate: f64,
) -> Vec<String> {
    let mut load_args = vec![
        "bench".to_owned(),
        "load".to_owned(),
        "--protocol".to_owned(),
        format!("{protocol:?}").to_lowercase(),
        "--room-prefix".to_owned(),
        room_prefix.to_owned(),
    ];
    for (server, url) in servers {
        load_args.extend([
            "--url".to_owned(),
            url.clone(),
            "--server-pid".to_owned(),
            server.pid().to_string(),
        ]);
    }
    load_args.extend([
        "--participants".to_owned(),
        participants.to_string(),
        "--rate".to_owned(),
        rate.to_string(),
        "--seconds".to_owned(),
        args.seconds.to_string(),
        "--concurrency".to_owned(),
        args.concurrency.to_string(),
    ]);
    load_args
}

impl LoadResult {
    /// One result of load processes that ran at the same time: counts and samples added up,
    /// the join phase as long as the slowest process's, memory from the earliest "before" to
    /// the latest "after" (the servers' RSS is measured by every process).
    fn merge(results: Vec<LoadResult>) -> LoadResult {
        let mut all = LoadResult {
            rss_before: u64::MAX,
            ..LoadResult::default()
        };
        for r in results {
            all.participants += r.participants;
            all.joined += r.joined;
            all.join_seconds = all.join_seconds.max(r.join_seconds);
            all.join_ms.extend(r.join_ms);
            all.join_cpu_servers += r.join_cpu_servers;
            all.join_cpu_load += r.join_cpu_load;
            all.rss_before = all.rss_before.min(r.rss_before);
            all.rss_after = all.rss_after.max(r.rss_after);
            all.chat_sent += r.chat_sent;
            all.chat_ms.extend(r.chat_ms);
            all.sessions_requested += r.sessions_requested;
            all.request_ms.extend(r.request_ms);
            all.sdp_ms.extend(r.sdp_ms);
            all.chat_cross_ms.extend(r.chat_cross_ms);
            all.request_cross_ms.extend(r.request_cross_ms);
            all.sdp_cross_ms.extend(r.sdp_cross_ms);
            all.held += r.held;
            all.errors += r.errors;
        }
        all.rss_before = all.rss_before.min(all.rss_after);
        all
    }
}

fn figures(ours: &[LoadResult], anchor: &[LoadResult]) -> Vec<Figure> {
    let per_run = |runs: &[LoadResult], f: &dyn Fn(&LoadResult) -> f64| -> Vec<f64> {
        runs.iter().map(f).collect()
    };
    let pooled = |runs: &[LoadResult], f: &dyn Fn(&LoadResult) -> &Vec<f64>| -> Vec<f64> {
        runs.iter().flat_map(|r| f(r).iter().copied()).collect()
    };
    let join_rate = |r: &LoadResult| r.joined as f64 / r.join_seconds.max(1e-9);
    let memory = |r: &LoadResult| {
        (r.rss_after as f64 - r.rss_before as f64) / 1024.0 / r.joined.max(1) as f64
    };
    let held = |r: &LoadResult| r.held as f64;
    let per_join = |cpu: f64, r: &LoadResult| cpu * 1e6 / r.joined.max(1) as f64;
    let server_cpu = |r: &LoadResult| per_join(r.join_cpu_servers, r);
    let load_cpu = |r: &LoadResult| per_join(r.join_cpu_load, r);

    let mut figures = Vec::new();
    let mut per_run_figure = |name: &str, unit: &'static str, f: &dyn Fn(&LoadResult) -> f64| {
        let values = per_run(ours, f);
        if let Some(mut figure) = Figure::from_samples(name, unit, &values) {
            if values.len() == 1 {
                (figure.p95, figure.p99) = (None, None);
            }
            figures.push(figure.with_anchor(median(&per_run(anchor, f))));
        }
    };
    per_run_figure("join_rate", "joins/s", &join_rate);
    per_run_figure("join_cpu_server", "µs/join", &server_cpu);
    per_run_figure("join_cpu_load_generator", "µs/join", &load_cpu);
    per_run_figure("memory_per_participant", "KiB", &memory);
    per_run_figure("connections_held", "connections", &held);
    let mut sampled = |name: &str, f: &dyn Fn(&LoadResult) -> &Vec<f64>, with_anchor: bool| {
        if let Some(figure) = Figure::from_samples(name, "ms", &pooled(ours, f)) {
            let anchor = with_anchor
                .then(|| Summary::of(&pooled(anchor, f)).map(|s| s.median))
                .flatten();
            figures.push(figure.with_anchor(anchor));
        }
    };
    sampled("join_time", &|r| &r.join_ms, true);
    sampled("chat_fanout_latency", &|r| &r.chat_ms, false);
    sampled("session_request_latency", &|r| &r.request_ms, true);
    sampled("sdp_relay_latency", &|r| &r.sdp_ms, true);
    figures
}

// ---------------------------------------------------------------------------------------------
// The load generator (its own process).
// ---------------------------------------------------------------------------------------------

/// What every connection task of the load generator shares.
struct Shared {
    protocol: Protocol,
    /// How many nodes the participants are spread over (see [`node_of`]).
    nodes: usize,
    /// The clock of every stamp: nanoseconds since this instant travel in chat texts and SDPs.
    epoch: Instant,
    /// Sessions asked for and not yet seen by the publisher: key → when asked.
    /// Ours: "ROOM/VIEWER"; anchor: the viewer's peer id.
    pending: Mutex<HashMap<String, Instant>>,
    chat_ms: Mutex<Vec<f64>>,
    request_ms: Mutex<Vec<f64>>,
    sdp_ms: Mutex<Vec<f64>>,
    chat_cross_ms: Mutex<Vec<f64>>,
    request_cross_ms: Mutex<Vec<f64>>,
    sdp_cross_ms: Mutex<Vec<f64>>,
    /// Connections whose reader still runs.
    open: AtomicUsize,
    errors: AtomicUsize,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Milliseconds since a stamp taken with [`Shared::now_ns`].
    fn since_ns(&self, stamp: u64) -> f64 {
        (self.now_ns().saturating_sub(stamp)) as f64 / 1e6
    }

    /// Records a latency sample between seats `a` and `b` of `room`: into `all`, and into
    /// `cross` too when they are connected to different nodes.
    fn record(
        &self,
        all: &Mutex<Vec<f64>>,
        cross: &Mutex<Vec<f64>>,
        room: usize,
        (a, b): (usize, usize),
        value: f64,
    ) {
        all.lock().unwrap().push(value);
        if node_of(room, a, self.nodes) != node_of(room, b, self.nodes) {
            cross.lock().unwrap().push(value);
        }
    }
}

/// The node (index into the URLs) that seat `seat` of room `room` connects to: even rooms have
/// all seats on one node, odd rooms one seat per node in turn (see the module doc).
fn node_of(room: usize, seat: usize, nodes: usize) -> usize {
    match room % 2 {
        0 => (room / 2) % nodes,
        _ => (room / 2 + seat) % nodes,
    }
}

/// The seat of a username made by [`username`].
fn seat_of(username: &str) -> Option<usize> {
    username.strip_prefix('p')?.parse().ok()
}

/// CPU time used so far by all the servers.
fn total_cpu(pids: &[u32]) -> anyhow::Result<Duration> {
    pids.iter().map(|pid| process_cpu(*pid)).sum()
}

/// Resident memory of all the servers.
fn total_rss(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|pid| process_rss(*pid)).sum()
}

/// One simulated participant, as the schedulers see it. Its room is its index in the seat
/// table (ours names it `bench-INDEX`); seat 0 publishes (anchor: producer), seats 1 and 2 view.
struct Peer {
    /// Ours: the username; anchor: the peer id the server assigned.
    id: String,
    /// Text frames to send. Bounded: a scheduler that outruns a socket skips a beat.
    tx: mpsc::Sender<String>,
}

/// `gst-room bench load`: runs the phases and prints [`RESULT`] and the JSON result.
pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let rooms = args.participants as usize / ROOM_SIZE;
    if rooms == 0 {
        bail!("at least {ROOM_SIZE} participants");
    }
    if args.url.len() != args.server_pid.len() {
        bail!("one --server-pid per --url");
    }
    let shared = Arc::new(Shared {
        protocol: args.protocol,
        nodes: args.url.len(),
        epoch: Instant::now(),
        pending: Mutex::default(),
        chat_ms: Mutex::default(),
        request_ms: Mutex::default(),
        sdp_ms: Mutex::default(),
        chat_cross_ms: Mutex::default(),
        request_cross_ms: Mutex::default(),
        sdp_cross_ms: Mutex::default(),
        open: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });
    let mut result = LoadResult {
        participants: rooms * ROOM_SIZE,
        rss_before: total_rss(&args.server_pid)?,
        ..LoadResult::default()
    };

    // 1. Joins: publishers first (the anchor's viewers need their producer's id).
    let me = std::process::id();
    let cpu_before = (total_cpu(&args.server_pid)?, process_cpu(me)?);
    let started = Instant::now();
    let mut seats: Vec<[Option<Peer>; ROOM_SIZE]> =
        (0..rooms).map(|_| [None, None, None]).collect();
    let mut producer_ids: Vec<String> = vec![String::new(); rooms];
    for wave in [vec![0], vec![1, 2]] {
        let jobs: Vec<(usize, usize)> = (0..rooms)
            .flat_map(|room| wave.iter().map(move |&seat| (room, seat)))
            .collect();
        let joins = futures::stream::iter(jobs)
            .map(|(room, seat)| {
                let shared = shared.clone();
                let url = args.url[node_of(room, seat, args.url.len())].clone();
                let name = format!("{}-{room}", args.room_prefix);
                async move { (room, seat, join(shared, &url, &name, room, seat).await) }
            })
            .buffer_unordered(args.concurrency.max(1));
        let joined: Vec<_> = joins.collect().await;
        for (room, seat, outcome) in joined {
            match outcome {
                Ok((peer, took)) => {
                    result.join_ms.push(ms(took));
                    if seat == 0 {
                        producer_ids[room] = peer.id.clone();
                    }
                    seats[room][seat] = Some(peer);
                }
                Err(err) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("load: room {room} seat {seat}: {err:#}");
                }
            }
        }
    }
    result.join_seconds = started.elapsed().as_secs_f64();
    result.join_cpu_servers = (total_cpu(&args.server_pid)? - cpu_before.0).as_secs_f64();
    result.join_cpu_load = (process_cpu(me)? - cpu_before.1).as_secs_f64();
    result.joined = result.join_ms.len();

    // 2. Publish, settle, memory.
    if args.protocol == Protocol::Room {
        for peer in seats.iter().filter_map(|s| s[0].as_ref()) {
            let publish = ClientMessage::Publish {
                stream: "main".into(),
                audio: true,
                video: true,
            };
            let _ = peer.tx.send(serde_json::to_string(&publish)?).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    result.rss_after = total_rss(&args.server_pid)?;

    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let phase = Duration::from_secs_f64(args.seconds);
    let drain = Duration::from_millis(500);

    // 3. Chat (ours only).
    if args.protocol == Protocol::Room {
        let mut tick = tokio::time::interval(period);
        let end = Instant::now() + phase;
        let mut i = 0usize;
        while Instant::now() < end {
            tick.tick().await;
            let (room, seat) = (i % rooms, (i / rooms) % ROOM_SIZE);
            i += 1;
            let Some(peer) = &seats[room][seat] else {
                continue;
            };
            let msg = ClientMessage::Message {
                to: None,
                text: format!("bench-ts:{}", shared.now_ns()),
            };
            if peer.tx.try_send(serde_json::to_string(&msg)?).is_ok() {
                result.chat_sent += 1;
            }
        }
        tokio::time::sleep(drain).await;
    }

    // 4. Session relay.
    let mut tick = tokio::time::interval(period);
    let end = Instant::now() + phase;
    let mut i = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let (room, seat) = (i % rooms, 1 + (i / rooms) % (ROOM_SIZE - 1));
        i += 1;
        let (Some(viewer), Some(_)) = (&seats[room][seat], &seats[room][0]) else {
            continue;
        };
        let (key, text) = match args.protocol {
            Protocol::Room => (
                format!("{room}/{}", username(seat)),
                serde_json::to_string(&ClientMessage::Play {
                    participant: username(0),
                    stream: "main".into(),
                })?,
            ),
            Protocol::Anchor => (
                viewer.id.clone(),
                json!({"type": "startSession", "peerId": producer_ids[room]}).to_string(),
            ),
        };
        // Stamped before sending, so that the publisher never sees a request it cannot time.
        shared
            .pending
            .lock()
            .unwrap()
            .insert(key.clone(), Instant::now());
        if viewer.tx.try_send(text).is_ok() {
            result.sessions_requested += 1;
        } else {
            shared.pending.lock().unwrap().remove(&key);
        }
    }
    tokio::time::sleep(drain).await;

    // 5. What is left.
    result.held = shared.open.load(Ordering::Relaxed);
    result.errors += shared.errors.load(Ordering::Relaxed);
    result.chat_ms = std::mem::take(&mut *shared.chat_ms.lock().unwrap());
    result.request_ms = std::mem::take(&mut *shared.request_ms.lock().unwrap());
    result.sdp_ms = std::mem::take(&mut *shared.sdp_ms.lock().unwrap());
    result.chat_cross_ms = std::mem::take(&mut *shared.chat_cross_ms.lock().unwrap());
    result.request_cross_ms = std::mem::take(&mut *shared.request_cross_ms.lock().unwrap());
    result.sdp_cross_ms = std::mem::take(&mut *shared.sdp_cross_ms.lock().unwrap());
    println!("{RESULT}{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The username of a seat.
fn username(seat: usize) -> String {
    format!("p{seat}")
}

/// Connects and joins (anchor: connects and registers); returns the peer and how long it took.
/// The connection's reader and writer then run as tasks of their own.
async fn join(
    shared: Arc<Shared>,
    url: &str,
    room_name: &str,
    room: usize,
    seat: usize,
) -> anyhow::Result<(Peer, Duration)> {
    let started = Instant::now();
    // TCP_NODELAY, as browsers set it: otherwise Nagle holds a small frame that follows an
    // unacknowledged one until the server's delayed ACK (40 ms), and we would time the client.
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow!("expected a ws:// URL, got {url}"))?;
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .context("connecting")?;
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) = client_async_with_config(url, tcp, Some(config))
        .await
        .context("WebSocket handshake")?;
    let (mut sink, mut stream) = ws.split();
    let mut next_text = async || -> anyhow::Result<String> {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(_))) | None => bail!("closed while joining"),
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(err.into()),
            }
        }
    };
    let id = match shared.protocol {
        Protocol::Room => {
            let welcome = next_text().await?;
            if !matches!(
                serde_json::from_str(&welcome)?,
                ServerMessage::Welcome { .. }
            ) {
                bail!("expected a welcome, got {welcome}");
            }
            let join = ClientMessage::Join {
                room: room_name.to_owned(),
                username: username(seat),
                token: None,
            };
            sink.send(Message::text(serde_json::to_string(&join)?))
                .await?;
            loop {
                match serde_json::from_str(&next_text().await?)? {
                    ServerMessage::State { .. } => break username(seat),
                    ServerMessage::Failed { reason, detail } => {
                        bail!("join refused: {}: {detail}", reason.as_str())
                    }
                    _ => continue,
                }
            }
        }
        Protocol::Anchor => {
            let welcome: serde_json::Value = serde_json::from_str(&next_text().await?)?;
            let id = welcome["peerId"]
                .as_str()
                .ok_or_else(|| anyhow!("expected a welcome, got {welcome}"))?
                .to_owned();
            let roles = if seat == 0 {
                json!(["producer"])
            } else {
                json!([])
            };
            let status =
                json!({"type": "setPeerStatus", "roles": roles, "meta": null, "peerId": id});
            sink.send(Message::text(status.to_string())).await?;
            id
        }
    };
    let took = started.elapsed();

    let (tx, mut outgoing) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        while let Some(text) = outgoing.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    shared.open.fetch_add(1, Ordering::Relaxed);
    let reply = tx.clone();
    tokio::spawn(async move {
        // Reading also answers the server's pings (tungstenite queues the pong and flushes it
        // on the next read), which keeps the room server's keepalive satisfied.
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(Message::Text(text)) => {
                    let answer = match shared.protocol {
                        Protocol::Room => on_room_message(&shared, room, seat, text.as_str()),
                        Protocol::Anchor => on_anchor_message(&shared, text.as_str()),
                    };
                    if let Some(answer) = answer {
                        let _ = reply.send(answer).await;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        shared.open.fetch_sub(1, Ordering::Relaxed);
    });
    Ok((Peer { id, tx }, took))
}

/// Handles a room server message; returns the answer to send, if any.
fn on_room_message(shared: &Shared, room: usize, seat: usize, text: &str) -> Option<String> {
    let msg: ServerMessage = serde_json::from_str(text).ok()?;
    match msg {
        ServerMessage::Message { from, text, .. } if from != username(seat) => {
            let stamp = text.strip_prefix("bench-ts:")?.parse().ok()?;
            let pair = (seat_of(&from)?, seat);
            let latency = shared.since_ns(stamp);
            shared.record(&shared.chat_ms, &shared.chat_cross_ms, room, pair, latency);
            None
        }
        ServerMessage::SessionRequest {
            session, viewer, ..
        } => {
            if let Some(asked) = shared
                .pending
                .lock()
                .unwrap()
                .remove(&format!("{room}/{viewer}"))
            {
                let pair = (seat_of(&viewer)?, seat);
                let latency = ms(asked.elapsed());
                shared.record(
                    &shared.request_ms,
                    &shared.request_cross_ms,
                    room,
                    pair,
                    latency,
                );
            }
            let offer = ClientMessage::Sdp {
                session,
                description: SessionDescription {
                    kind: SdpType::Offer,
                    sdp: offer_sdp(shared.now_ns()),
                },
            };
            serde_json::to_string(&offer).ok()
        }
        ServerMessage::Sdp {
            session,
            description,
        } => {
            if let Some(stamp) = sdp_stamp(&description.sdp) {
                // The offer comes from the publisher, seat 0.
                let latency = shared.since_ns(stamp);
                shared.record(
                    &shared.sdp_ms,
                    &shared.sdp_cross_ms,
                    room,
                    (0, seat),
                    latency,
                );
            }
            serde_json::to_string(&ClientMessage::Stop { session }).ok()
        }
        ServerMessage::Error { .. } => {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            None
        }
        _ => None,
    }
}

/// Handles a stock signalling server message; returns the answer to send, if any.
fn on_anchor_message(shared: &Shared, text: &str) -> Option<String> {
    let msg: serde_json::Value = serde_json::from_str(text).ok()?;
    match msg["type"].as_str()? {
        // To the producer: a consumer wants a session.
        "startSession" => {
            let viewer = msg["peerId"].as_str()?;
            if let Some(asked) = shared.pending.lock().unwrap().remove(viewer) {
                shared.request_ms.lock().unwrap().push(ms(asked.elapsed()));
            }
            let offer = json!({
                "type": "peer",
                "sessionId": msg["sessionId"],
                "sdp": {"type": "offer", "sdp": offer_sdp(shared.now_ns())},
            });
            Some(offer.to_string())
        }
        // To the consumer: the producer's offer.
        "peer" => {
            let stamp = sdp_stamp(msg["sdp"]["sdp"].as_str()?)?;
            shared.sdp_ms.lock().unwrap().push(shared.since_ns(stamp));
            Some(json!({"type": "endSession", "sessionId": msg["sessionId"]}).to_string())
        }
        "error" => {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            None
        }
        _ => None,
    }
}

/// A VP8 video offer of the size webrtcsink sends (~1.5 KB), stamped with `now_ns`.
fn offer_sdp(now_ns: u64) -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE video0\r\na=ice-options:trickle\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\n\
         a=setup:actpass\r\na=ice-ufrag:W1CTtWnLK5KEYl1N3VQNZHDUzv5GBSvA\r\n\
         a=ice-pwd:U7u4cUfgTuBaYVt8dBbLQPwrQVmRmHgD\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=sendonly\r\n\
         a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
         a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 transport-cc\r\n\
         a=extmap:1 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
         a=ssrc-group:FID 2846357431 3712649853\r\n\
         a=ssrc:2846357431 msid:user2463437154@host-7d4b4f4a webrtctransceiver0\r\n\
         a=ssrc:2846357431 cname:user2463437154@host-7d4b4f4a\r\n\
         a=ssrc:3712649853 msid:user2463437154@host-7d4b4f4a webrtctransceiver0\r\n\
         a=ssrc:3712649853 cname:user2463437154@host-7d4b4f4a\r\n\
         a=mid:video0\r\n\
         a=fingerprint:sha-256 6B:26:8F:5A:1B:3C:4D:2E:9F:8A:7B:6C:5D:4E:3F:2A:1B:0C:9D:8E:7F:6A:5B:4C:3D:2E:1F:0A:9B:8C:7D:6E\r\n",
    );
    sdp.push_str(&format!("a=x-bench-ts:{now_ns}\r\n"));
    sdp
}

/// The stamp [`offer_sdp`] put into an SDP.
fn sdp_stamp(sdp: &str) -> Option<u64> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=x-bench-ts:"))?
        .trim()
        .parse()
        .ok()
}
