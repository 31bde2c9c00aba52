//! `netshape`: a TCP proxy that makes a loopback connection behave like a network link, for the
//! tests and benchmarks of remote members. Every byte forwarded waits out the added one-way
//! latency and shares the link's bandwidth (per direction, over all connections). A control
//! port takes one command per line to switch fault modes while connections are open:
//!
//! ```text
//! normal          forward as configured
//! stall           hold every byte (connections stay open; new ones are taken, then held)
//! slow            forward at 1 MB/s
//! reset           reset every open connection, and each new one at once
//! refuse          stop listening: new connections are refused
//! rate 2gbit      set the bandwidth (bit/s: k, m, g suffixes)
//! latency 1ms     set the added one-way latency
//! ```
//!
//! Usage: `netshape --to HOST:PORT [--listen 127.0.0.1:0] [--control 127.0.0.1:0]
//! [--rate 2gbit] [--latency 1ms]`. It prints `listen ADDR` and `control ADDR` once ready.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

const NORMAL: u8 = 0;
const STALL: u8 = 1;
const SLOW: u8 = 2;
const RESET: u8 = 3;
const REFUSE: u8 = 4;
/// The rate of `slow`, in bytes per second.
const SLOW_RATE: u64 = 1_000_000;
/// Bytes read and forwarded in one step.
const STEP: usize = 64 << 10;

/// The link: mode, bandwidth, latency, and when each direction is next free.
struct Link {
    mode: AtomicU8,
    /// Bytes per second; 0 is unlimited.
    rate: AtomicU64,
    latency_us: AtomicU64,
    free_at: [Mutex<Instant>; 2],
    changed: Condvar,
    gate: Mutex<()>,
    /// Bumped by `reset`: connections opened before it end.
    epoch: AtomicU64,
}

impl Link {
    fn mode(&self) -> u8 {
        self.mode.load(Ordering::SeqCst)
    }

    /// Waits while the link is stalled.
    fn wait_unstalled(&self) {
        let mut g = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        while self.mode() == STALL {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// When `n` bytes sent now in direction `dir` arrive: after the bytes before them have
    /// gone through the link, plus the latency.
    fn schedule(&self, dir: usize, n: usize) -> Instant {
        let rate = match self.mode() {
            SLOW => SLOW_RATE,
            _ => self.rate.load(Ordering::Relaxed),
        };
        let wire = if rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(n as f64 / rate as f64)
        };
        let mut free = self.free_at[dir].lock().unwrap_or_else(|p| p.into_inner());
        let start = (*free).max(Instant::now());
        *free = start + wire;
        *free + Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("bit")
        .or(t.strip_suffix("bps"))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let bits: f64 = num.parse().map_err(|_| format!("bad rate '{s}'"))?;
    Ok((bits * mult / 8.0) as u64)
}

fn parse_latency(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e6)
    } else {
        (t, 1e3)
    };
    let v: f64 = num.parse().map_err(|_| format!("bad latency '{s}'"))?;
    Ok((v * mult) as u64)
}

/// Forwards `from` to `to` through the link in direction `dir`: a reader stamps each step with
/// its arrival time, a writer delivers it then, so latency does not cap throughput.
fn pump(
    link: Arc<Link>,
    dir: usize,
    mut from: TcpStream,
    to: TcpStream,
    epoch: u64,
    done: Arc<AtomicBool>,
) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(256);
    let writer_link = link.clone();
    let writer_done = done.clone();
    let mut to_w = match to.try_clone() {
        Ok(t) => t,
        Err(_) => return,
    };
    let writer = std::thread::spawn(move || {
        for (at, data) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            writer_link.wait_unstalled();
            if writer_done.load(Ordering::SeqCst) || to_w.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to_w.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; STEP];
    loop {
        link.wait_unstalled();
        if done.load(Ordering::SeqCst) || link.epoch.load(Ordering::SeqCst) != epoch {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = link.schedule(dir, n);
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = to.shutdown(Shutdown::Write);
}

/// Closes a connection with a TCP reset (linger 0).
fn reset(s: &TcpStream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(s);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

fn serve_conn(link: Arc<Link>, client: TcpStream, to: SocketAddr) {
    if link.mode() == RESET {
        return reset(&client);
    }
    let Ok(server) = TcpStream::connect(to) else {
        return reset(&client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let epoch = link.epoch.load(Ordering::SeqCst);
    let done = Arc::new(AtomicBool::new(false));
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (l2, d2) = (link.clone(), done.clone());
    let up = std::thread::spawn(move || pump(l2, 0, c2, s2, epoch, d2));
    // The watcher resets both ends when the link is reset.
    let (l3, d3, c3, s3) = (
        link.clone(),
        done.clone(),
        client.try_clone(),
        server.try_clone(),
    );
    std::thread::spawn(move || {
        let mut g = l3.gate.lock().unwrap_or_else(|p| p.into_inner());
        while !d3.load(Ordering::SeqCst) && l3.epoch.load(Ordering::SeqCst) == epoch {
            g = l3
                .changed
                .wait_timeout(g, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if !d3.load(Ordering::SeqCst) {
            if let Ok(c) = &c3 {
                reset(c);
            }
            if let Ok(s) = &s3 {
                reset(s);
            }
        }
    });
    pump(link, 1, server, client, epoch, done.clone());
    let _ = up.join();
    done.store(true, Ordering::SeqCst);
}

/// Listens on `addr` again after `refuse`. The accept loop may still hold the old socket for a
/// moment (its `accept` returns once the socket is shut down), so binding is retried for up to
/// two seconds.
fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..100 {
        match TcpListener::bind(addr) {
            Ok(l) => return Some(l),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    eprintln!("netshape: cannot listen on {addr} again");
    None
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("netshape: error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{}",
            include_str!("netshape.rs")
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .map(|l| l.trim_start_matches("//!").trim_start())
                .collect::<Vec<_>>()
                .join("\n")
        );
        return Ok(());
    }
    let to: SocketAddr = arg(&args, "--to")
        .ok_or("--to HOST:PORT is required")?
        .parse()
        .map_err(|e| format!("--to: {e}"))?;
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let control = arg(&args, "--control").unwrap_or_else(|| "127.0.0.1:0".into());
    let link = Arc::new(Link {
        mode: AtomicU8::new(NORMAL),
        rate: AtomicU64::new(
            arg(&args, "--rate")
                .map(|r| parse_rate(&r))
                .transpose()?
                .unwrap_or(0),
        ),
        latency_us: AtomicU64::new(
            arg(&args, "--latency")
                .map(|l| parse_latency(&l))
                .transpose()?
                .unwrap_or(0),
        ),
        free_at: [Mutex::new(Instant::now()), Mutex::new(Instant::now())],
        changed: Condvar::new(),
        gate: Mutex::new(()),
        epoch: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(&listen).map_err(|e| format!("{listen}: {e}"))?;
    let listen_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ctl = TcpListener::bind(&control).map_err(|e| format!("{control}: {e}"))?;
    println!("listen {listen_addr}");
    println!("control {}", ctl.local_addr().map_err(|e| e.to_string())?);
    let _ = std::io::stdout().flush();

    // The accept loop runs while the mode is not `refuse`; `refuse` closes the listener and
    // leaving it binds the same address again.
    let accepting = Arc::new(Mutex::new(Some(listener)));
    {
        let (link, accepting) = (link.clone(), accepting.clone());
        std::thread::spawn(move || accept_loop(&link, &accepting, to));
    }
    for conn in ctl.incoming() {
        let Ok(conn) = conn else { continue };
        let mut out = conn.try_clone().map_err(|e| e.to_string())?;
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            let answer = command(&link, &accepting, listen_addr, &line);
            let _ = writeln!(out, "{answer}");
        }
    }
    Ok(())
}

/// Accepts connections to the shaped side while the listener is there (not `refuse`), each
/// served on a thread of its own.
fn accept_loop(link: &Arc<Link>, accepting: &Mutex<Option<TcpListener>>, to: SocketAddr) {
    loop {
        let l = accepting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|l| l.try_clone().ok());
        let Some(l) = l else {
            let g = link.gate.lock().unwrap_or_else(|p| p.into_inner());
            let _ = link.changed.wait_timeout(g, Duration::from_millis(100));
            continue;
        };
        if let Ok((c, _)) = l.accept() {
            if link.mode() == REFUSE {
                drop(c);
                continue;
            }
            let link = link.clone();
            std::thread::spawn(move || serve_conn(link, c, to));
        }
    }
}

/// Carries out one control command; the answer is `ok` or what went wrong.
fn command(
    link: &Link,
    accepting: &Mutex<Option<TcpListener>>,
    listen_addr: SocketAddr,
    line: &str,
) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["normal"] | ["stall"] | ["slow"] | ["reset"] | ["refuse"] => {
            let mode = match words[0] {
                "stall" => STALL,
                "slow" => SLOW,
                "reset" => RESET,
                "refuse" => REFUSE,
                _ => NORMAL,
            };
            let was = link.mode.swap(mode, Ordering::SeqCst);
            if mode == RESET {
                link.epoch.fetch_add(1, Ordering::SeqCst);
            }
            let mut slot = accepting.lock().unwrap_or_else(|p| p.into_inner());
            if mode == REFUSE {
                if let Some(l) = slot.take() {
                    // SAFETY: shutdown on the listening socket wakes its accept().
                    unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&l), libc::SHUT_RDWR) };
                }
            } else if was == REFUSE || slot.is_none() {
                *slot = rebind(listen_addr);
            }
            let listening = slot.is_some() || mode == REFUSE;
            drop(slot);
            link.changed.notify_all();
            if listening {
                "ok".to_string()
            } else {
                format!("cannot listen on {listen_addr} again")
            }
        }
        ["rate", r] => match parse_rate(r) {
            Ok(v) => {
                link.rate.store(v, Ordering::SeqCst);
                "ok".into()
            }
            Err(e) => e,
        },
        ["latency", l] => match parse_latency(l) {
            Ok(v) => {
                link.latency_us.store(v, Ordering::SeqCst);
                "ok".into()
            }
            Err(e) => e,
        },
        _ => format!("unknown command '{line}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_latencies_parse() {
        assert_eq!(parse_rate("2gbit").unwrap(), 250_000_000);
        assert_eq!(parse_rate("10G").unwrap(), 1_250_000_000);
        assert_eq!(parse_rate("800k").unwrap(), 100_000);
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_latency("1ms").unwrap(), 1000);
        assert_eq!(parse_latency("250us").unwrap(), 250);
        assert_eq!(parse_latency("2").unwrap(), 2000);
    }
}
