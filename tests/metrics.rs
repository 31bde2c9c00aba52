//! `/metrics` and what `status` says a mount is doing now: the exposition parses with the
//! Prometheus client's own parser, its counters move as reads happen, the endpoint listens on
//! exactly the address given, and `status` names the open file and the bytes it read.

mod common;

use common::*;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;

/// A GET on 127.0.0.1:`port`; returns the status code and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// Every sample of an exposition, as the Prometheus client's parser reads it: name and labels
/// (`name{k="v",...}`, labels sorted) to value. Fails on text the parser rejects.
fn parse(text: &str) -> HashMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not valid Prometheus text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sockets listening on `port`, as /proc/net/tcp and tcp6 list them (local address hex).
fn listeners(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, state) = (f[1], f[3]);
            let (ip, p) = addr.rsplit_once(':').unwrap();
            if state == "0A" && u16::from_str_radix(p, 16).unwrap() == port {
                out.push(ip.to_string());
            }
        }
    }
    out
}

/// The scrape `after` counts requests to `paths`' members, shows each up, and has each one's
/// latency histogram.
fn assert_members_asked_and_up(after: &HashMap<String, f64>, paths: &[std::path::PathBuf]) {
    let requests: f64 = paths
        .iter()
        .map(|p| {
            after[&format!(
                "shardfs_member_requests_total{{member=\"{}\"}}",
                p.display()
            )]
        })
        .sum();
    assert!(requests >= 3.0, "{after:?}");
    for p in paths {
        let up = format!(
            "shardfs_member_state{{member=\"{}\",state=\"up\"}}",
            p.display()
        );
        assert_eq!(after[&up], 1.0);
        let n = format!(
            "shardfs_member_request_duration_seconds_count{{member=\"{}\"}}",
            p.display()
        );
        assert!(after.contains_key(&n), "{n}");
    }
}

#[test]
fn metrics_parse_move_with_reads_and_listen_only_where_told() {
    let Packed {
        dir,
        paths,
        store,
        data,
        ..
    } = packed(2, 31, 6 << 20, &["--replicas", "2", "--chunk-size", "1MiB"]);
    let d = dir.path();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--name", "m", "--metrics", &addr, "--cache-size", "2MiB"],
    );
    // Exactly the address given: 127.0.0.1 (0100007F), on IPv4 only.
    assert_eq!(listeners(port), vec!["0100007F".to_string()]);
    assert_eq!(get(port, "/other").0, 404);

    let (code, text) = get(port, "/metrics");
    assert_eq!(code, 200);
    let before = parse(&text);
    for name in [
        "shardfs_bytes_served_total",
        "shardfs_reads_total",
        "shardfs_cache_hits_total",
        "shardfs_cache_misses_total",
        "shardfs_cache_bytes",
        "shardfs_chunks_decompressed_total",
        "shardfs_chunks_prefetched_total",
        "shardfs_replica_failovers_total",
        "shardfs_read_errors_total",
        "shardfs_read_duration_seconds_count",
        "shardfs_open_files",
        "shardfs_reads_waiting",
        "shardfs_readahead_in_flight",
        "shardfs_refreshes_total",
    ] {
        assert!(before.contains_key(name), "{name} missing:\n{text}");
    }
    assert_eq!(before["shardfs_model_version{model=\"m\"}"], 1.0);

    // Half the file read through a handle kept open: counters move, status shows the handle.
    let file = fs::File::open(mount.dir.join("m.bin")).unwrap();
    let mut half = vec![0u8; 3 << 20];
    file.read_exact_at(&mut half, 0).unwrap();
    assert!(half == data[..3 << 20]);
    let s = mount.status();
    let open = s["open_files"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{s}");
    assert_eq!(open[0]["path"], "m/m.bin");
    assert!(open[0]["bytes_served"].as_u64().unwrap() >= 3 << 20, "{s}");
    let human = String::from_utf8_lossy(
        &run_in(&d.join("state"), &["status", mount.dir.to_str().unwrap()]).stdout,
    )
    .into_owned();
    assert!(human.contains("m/m.bin"), "{human}");
    drop(file);

    let after = parse(&get(port, "/metrics").1);
    let grew = |k: &str| after[k] - before[k];
    assert!(grew("shardfs_bytes_served_total") >= (3 << 20) as f64);
    assert!(grew("shardfs_reads_total") >= 1.0);
    assert!(grew("shardfs_chunks_decompressed_total") >= 3.0);
    assert!(grew("shardfs_read_duration_seconds_count") >= 1.0);
    assert_eq!(
        after["shardfs_read_duration_seconds_count"],
        after["shardfs_read_duration_seconds_bucket{le=\"+Inf\"}"]
    );
    // Per member: requests went to the members, each labelled with its location, each up.
    assert_members_asked_and_up(&after, &paths);
    assert_eq!(after["shardfs_read_errors_total"], 0.0);

    // The endpoint goes with the mount.
    assert!(mount.unmount().status.success());
    assert!(listeners(port).is_empty());
}

#[test]
fn a_bad_or_taken_metrics_address_fails_the_mount_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    pack_bytes(d, &store, "m", &Rng::new(32).bytes(1 << 20), &[]);
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (addr, needle) in [
        ("localhost", "give IP:PORT"),
        (taken_addr.as_str(), "cannot listen"),
    ] {
        let out = run_in(
            &d.join("state"),
            &[
                "mount",
                "--store",
                &store,
                mnt.to_str().unwrap(),
                "--metrics",
                addr,
            ],
        );
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle) && err.lines().count() == 1, "{err}");
        assert!(!is_mounted(&mnt));
    }
}

#[test]
fn an_abused_metrics_endpoint_costs_a_few_threads_and_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    let data = Rng::new(33).bytes(8 << 20);
    pack_bytes(d, &store, "m", &data, &["--chunk-size", "1MiB"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mnt = d.join("mnt");
    let mount = Mounted::new(
        &store,
        &mnt,
        &d.join("state"),
        &["--name", "m", "--metrics", &addr],
    );
    assert_eq!(get(port, "/metrics").0, 200);
    let pid = mount.pid();
    let threads = proc_status(pid, "Threads");
    // 300 clients that send half a request and wait.
    // One client sends 256 MiB of header: the server stops reading after 8 KiB and cuts it.
    let flood = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_write_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Junk: ");
        let junk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..256 {
            match s.write_all(&junk) {
                Ok(()) => sent += junk.len(),
                Err(_) => break,
            }
        }
        sent
    });
    let sent = flood.join().unwrap();
    assert!(
        sent < 64 << 20,
        "the server took {sent} bytes of one header"
    );
    // Then 300 clients send half a request and wait.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x").unwrap();
            s
        })
        .collect();
    // Reads through the mount are unaffected.
    assert_eq!(fs::read(mnt.join("m.bin")).unwrap(), data);
    let during = proc_status(pid, "Threads");
    // No thread per connection: at most the member's I/O pool (8) and the hedged-read pool
    // (16) grow meanwhile, for the mount's own reads.
    assert!(
        during <= threads + 8 + 16,
        "threads grew from {threads} to {during} under 300 connections"
    );
    let hwm_kib = proc_status(pid, "VmHWM");
    eprintln!(
        "metrics under 300 idle clients and a 256 MiB header: threads {threads} -> {during}, header bytes taken before the cut {sent}, daemon peak RSS {} MiB",
        hwm_kib >> 10
    );
    assert!(hwm_kib < 200 << 10, "daemon peak RSS {hwm_kib} KiB");
    // Once the clients go, scrapes are answered again: as soon as the server has let go of the
    // connections they left (closed at once beyond its queue, or at a handler's EOF), which a
    // loaded machine takes longer to get through. Asked until a deadline far above the server's
    // own limits (2 s idle, 5 s an exchange); a hundred quick tries could all land before.
    drop(idle);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answered = loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if out.starts_with("HTTP/1.1 200") {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        // A pause between tries, not a wait for anything: each try is itself a connection the
        // server has to get through.
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        answered,
        "no scrape answered within 30 s of the clients leaving"
    );
    assert!(mount.unmount().status.success());
}

#[test]
fn a_host_name_and_port_serve_metrics_and_latencies_are_rounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = store_arg(&members(d, 1));
    // Enough chunks for the latency percentiles (8 samples at least).
    let data = Rng::new(34).bytes(12 << 20);
    pack_bytes(d, &store, "m", &data, &["--chunk-size", "1MiB"]);
    let port = free_port();
    let addr = format!("localhost:{port}");
    let mount = Mounted::new(
        &store,
        &d.join("mnt"),
        &d.join("state"),
        &["--name", "m", "--metrics", &addr],
    );
    assert_eq!(get(port, "/metrics").0, 200);
    assert!(fs::read(mount.dir.join("m.bin")).unwrap() == data);
    let s = mount.status();
    let p99 = s["members"][0]["latency_ms_p99"]
        .as_f64()
        .unwrap_or_else(|| panic!("{s}"));
    // Milliseconds to the microsecond, as they print: no float tail.
    let printed = s["members"][0]["latency_ms_p99"].to_string();
    assert!(
        printed.split('.').nth(1).is_none_or(|f| f.len() <= 3),
        "{printed}"
    );
    assert!(p99 > 0.0);
    assert!(mount.unmount().status.success());
}
