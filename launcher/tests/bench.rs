//! Smoke test of `gst-room bench`: the benchmarks run end to end (servers, load generator,
//! pipelines, anchors) and print well-formed figures. Structure only: never a timing threshold.

use std::process::Command;

use serde_json::Value;

/// Runs `gst-room bench ARGS...` and returns its JSON figure lines, checked for structure.
fn bench(args: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_gst-room"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run gst-room bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "gst-room bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Vec<Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!figures.is_empty(), "no JSON figures in:\n{stdout}");
    for figure in &figures {
        for key in [
            "bench", "name", "unit", "median", "p95", "runs", "anchor", "ratio",
        ] {
            assert!(figure.get(key).is_some(), "{key} missing in {figure}");
        }
        assert_eq!(figure["bench"], args[0]);
        assert!(
            figure["median"].as_f64().is_some_and(f64::is_finite),
            "{figure}"
        );
        assert!(figure["runs"].as_u64().is_some_and(|n| n > 0), "{figure}");
        // A ratio exists exactly when an anchor does.
        assert_eq!(
            figure["anchor"].is_null(),
            figure["ratio"].is_null(),
            "{figure}"
        );
    }
    figures
}

fn figure<'a>(figures: &'a [Value], name: &str) -> &'a Value {
    figures
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no figure {name} in {figures:?}"))
}

fn positive(value: &Value) -> bool {
    value.as_f64().is_some_and(|v| v > 0.0)
}

#[test]
fn server_bench_prints_figures_with_anchor() {
    let figures = bench(&[
        "server",
        "--participants",
        "30",
        "--runs",
        "1",
        "--seconds",
        "1",
    ]);
    for name in [
        "join_rate",
        "join_time",
        "chat_fanout_latency",
        "session_request_latency",
        "sdp_relay_latency",
    ] {
        assert!(positive(&figure(&figures, name)["median"]), "{name}");
    }
    assert_eq!(figure(&figures, "connections_held")["median"], 30.0);
    for name in ["join_rate", "session_request_latency", "sdp_relay_latency"] {
        assert!(positive(&figure(&figures, name)["anchor"]), "{name} anchor");
    }
    // CPU per join, of both sides (30 joins may take less than the clock tick /proc counts in).
    for name in ["join_cpu_server", "join_cpu_load_generator"] {
        let figure = figure(&figures, name);
        for side in ["median", "anchor"] {
            assert!(figure[side].as_f64().is_some_and(|v| v >= 0.0), "{figure}");
        }
    }
}

#[test]
fn server_bench_over_two_nodes_and_two_load_processes_prints_same_and_cross_node_figures() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(gst_room_tests::cluster::RedisServer::start());
    let figures = bench(&[
        "server",
        "--nodes",
        "2",
        "--redis",
        &redis.url(),
        "--participants",
        "30",
        "--generators",
        "2",
        "--seconds",
        "1",
    ]);
    // Both load processes' participants are counted (5 rooms each).
    assert_eq!(figure(&figures, "connections_held")["median"], 30.0);
    assert_eq!(figure(&figures, "connections_held")["anchor"], 30.0);
    for name in [
        "chat_fanout_latency",
        "session_request_latency",
        "sdp_relay_latency",
    ] {
        for side in ["same_node", "cross_node"] {
            let figure = figure(&figures, &format!("{name}_{side}"));
            assert!(positive(&figure["median"]), "{figure}");
            // The anchor: one node without Redis, in the same run.
            assert!(positive(&figure["anchor"]), "{figure}");
        }
    }
}

#[test]
fn join_bench_prints_figures_with_anchor() {
    let figures = bench(&["join", "--runs", "1"]);
    let first = figure(&figures, "first_frame");
    assert!(positive(&first["median"]));
    assert!(positive(&first["anchor"]));
    assert!(positive(&figure(&figures, "t_offer_received")["median"]));
}

#[test]
fn network_bench_prints_a_figure_per_condition() {
    // Root (network namespaces), as in CI; short windows: structure only.
    let figures = bench(&["network", "--seconds", "3", "--settle", "1"]);
    for condition in [
        "loss_0pct",
        "loss_2pct",
        "loss_5pct",
        "loss_10pct",
        "cap_2000kbit",
        "cap_1000kbit",
        "cap_500kbit",
    ] {
        for what in ["fps", "longest_freeze", "bitrate"] {
            figure(&figures, &format!("{condition}_{what}"));
        }
    }
    assert!(positive(&figure(&figures, "loss_0pct_fps")["median"]));
    assert!(positive(&figure(&figures, "loss_0pct_bitrate")["median"]));
}

#[test]
fn latency_bench_reads_the_frame_codes_on_every_path_in_mesh_and_sfu_rooms() {
    // Short: structure only. Each figure exists only when the viewer read the codes of frames
    // it showed and matched them with the publisher's stamps (unreadable codes are no sample).
    let figures = bench(&[
        "latency",
        "--path",
        "all",
        "--media",
        "mesh,sfu",
        "--runs",
        "20",
        "--warmup",
        "15",
        "--no-sweep",
        "--audio-seconds",
        "2",
    ]);
    for path in ["gst-gst", "gst-browser", "browser-gst", "browser-browser"] {
        for suffix in ["", "_sfu"] {
            let figure = figure(&figures, &format!("displayed_{path}{suffix}"));
            assert!(positive(&figure["median"]), "{figure}");
            // Every path has its anchor, measured in the same run.
            assert!(positive(&figure["anchor"]), "{figure}");
        }
    }
    for suffix in ["", "_sfu"] {
        let audio = figure(&figures, &format!("audio_gst-gst{suffix}"));
        assert!(positive(&audio["median"]), "{audio}");
    }
}
