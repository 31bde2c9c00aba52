//! The small HTTP/1 server under `--metrics`: GET requests only, one per connection, answered
//! by a fixed pool of handler threads. Whoever can reach the port is not trusted to be polite:
//! the request line and headers are read up to 8 KiB, a client has a few seconds for its whole
//! exchange, connections beyond the handlers and a short queue are closed at once, so no number
//! of idle, slow or huge requests costs the daemon more than a fixed few threads and buffers.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Request line and headers, at most.
pub const HEAD_MAX: usize = 8 << 10;

/// How much the server gives its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Threads answering requests.
    pub handlers: usize,
    /// Accepted connections waiting for a handler; the next ones are closed unanswered.
    pub waiting: usize,
    /// Longest a client may stay silent while sending its request.
    pub idle: Duration,
    /// Longest a client may take to send its request and read the answer.
    pub exchange: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handlers: 2,
            waiting: 16,
            idle: Duration::from_secs(2),
            exchange: Duration::from_secs(5),
        }
    }
}

/// What a handler answers: status code, content type and body.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Answers the path of a GET (without its query).
pub type Route = dyn Fn(&str) -> Answer + Send + Sync;

/// A running server; dropping it stops accepting and lets the handlers finish.
pub struct Server {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(listener: TcpListener, route: Arc<Route>, limits: Limits) -> io::Result<Server> {
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded::<TcpStream>(limits.waiting);
        for i in 0..limits.handlers {
            let (rx, route) = (rx.clone(), route.clone());
            std::thread::Builder::new()
                .name(format!("metrics-{i}"))
                .spawn(move || handle_all(&rx, &*route, limits))?;
        }
        let acceptor = {
            let (listener, stop) = (listener.clone(), stop.clone());
            std::thread::Builder::new()
                .name("metrics-accept".into())
                .spawn(move || accept_all(&listener, &stop, &tx))?
        };
        Ok(Server {
            listener,
            stop,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: the listener's descriptor stays open (the Arc holds it) for the whole call;
        // on Linux shutting down a listening socket wakes a thread blocked in accept(2).
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        // Handlers end when the queue closes, each within one exchange's deadline.
    }
}

fn accept_all(listener: &TcpListener, stop: &AtomicBool, queue: &Sender<TcpStream>) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => match queue.try_send(stream) {
                Ok(()) => {}
                // Every handler busy and the queue full: closed unanswered.
                Err(TrySendError::Full(stream)) => drop(stream),
                Err(TrySendError::Disconnected(_)) => return,
            },
            Err(e) => {
                log::debug!("metrics: accept failed: {e}");
                // Out of descriptors, say: give the handlers a moment to free some.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn handle_all(queue: &Receiver<TcpStream>, route: &Route, limits: Limits) {
    for stream in queue {
        if let Err(e) = exchange(stream, route, limits) {
            log::debug!("metrics: request dropped: {e}");
        }
    }
}

/// One request and its answer, within `limits.exchange`.
fn exchange(mut stream: TcpStream, route: &Route, limits: Limits) -> io::Result<()> {
    let deadline = Instant::now() + limits.exchange;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "client too slow"))
    };
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let answer = loop {
        if let Some(end) = end_of_head(&head) {
            break answer_for(&head[..end], route);
        }
        if head.len() >= HEAD_MAX {
            break plain(431, "request line and headers are limited to 8 KiB\n");
        }
        stream.set_read_timeout(Some(left()?.min(limits.idle)))?;
        let want = (HEAD_MAX - head.len()).min(buf.len());
        match stream.read(&mut buf[..want])? {
            0 => return Ok(()),
            n => head.extend_from_slice(&buf[..n]),
        }
    };
    stream.set_write_timeout(Some(left()?))?;
    let reason = match answer.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Bad Request",
    };
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    )?;
    stream.write_all(answer.body.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// Where the head ends (the blank line), if it has.
fn end_of_head(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| head.windows(2).position(|w| w == b"\n\n"))
}

fn answer_for(head: &[u8], route: &Route) -> Answer {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(v)) if v.starts_with("HTTP/1.") => {
            route(target.split('?').next().unwrap_or(target))
        }
        (Some(_), Some(_), Some(v)) if v.starts_with("HTTP/1.") => {
            plain(405, "only GET is served\n")
        }
        _ => plain(400, "not an HTTP/1 request\n"),
    }
}

/// A plain-text answer.
pub fn plain(status: u16, body: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const LIMITS: Limits = Limits {
        handlers: 2,
        waiting: 4,
        idle: Duration::from_millis(200),
        exchange: Duration::from_millis(500),
    };

    fn server() -> (Server, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        let route: Arc<Route> = Arc::new(|path: &str| match path {
            "/metrics" => plain(200, "up 1\n"),
            _ => plain(404, "no\n"),
        });
        (Server::start(listener, route, LIMITS).unwrap(), at)
    }

    fn ask(at: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(at).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(request);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn answers_get_and_refuses_the_rest() {
        let (_server, at) = server();
        let ok = ask(at, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nup 1\n"), "{ok}");
        assert!(ask(at, b"GET /x HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask(at, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(ask(at, b"hello\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn a_head_past_the_cap_is_refused_without_reading_it() {
        let (_server, at) = server();
        let mut request = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        request.resize(HEAD_MAX + 100, b'a');
        assert!(ask(at, &request).starts_with("HTTP/1.1 431"));
    }

    #[test]
    fn a_silent_client_is_cut_and_others_are_still_answered() {
        let (_server, at) = server();
        // More silent clients than handlers and queue together.
        let silent: Vec<TcpStream> = (0..LIMITS.handlers + LIMITS.waiting + 8)
            .map(|_| {
                let mut s = TcpStream::connect(at).unwrap();
                s.write_all(b"GET /met").unwrap();
                s
            })
            .collect();
        // Each is closed by the server (EOF or a reset), before the client's own timeout.
        for mut s in silent {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(0) => {}
                Ok(_) => panic!("a silent client got an answer"),
                Err(e) => assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "never cut"),
            }
        }
        assert!(ask(at, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }
}
