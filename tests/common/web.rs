//! A static web server for the tests (`tests/fixtures/range_server.py`: python's http.server
//! with `Range` requests answered), serving one folder on a free loopback port, stopped by its
//! pid when dropped.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Web {
    child: Child,
    pub port: u16,
}

/// Serves `dir` at `http://127.0.0.1:PORT/`.
pub fn serve(dir: &Path) -> Web {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/range_server.py");
    let mut child = Command::new(super::python())
        .arg(script)
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test venv's python runs the test web server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    // The server prints its port before it serves; a server that fails closes the pipe.
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the test web server did not start: {line:?}")
    });
    Web { child, port }
}

impl Web {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
