//! Child processes in end-to-end tests: killed (and reaped) when dropped, and a bounded wait for
//! a port on 127.0.0.1.

use std::process::Child;
use std::time::{Duration, Instant};

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGKILL it now (what a crash looks like to its peers).
    pub fn kill9(self) {
        drop(self);
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

/// Wait (up to 20 s) until something accepts on 127.0.0.1:`port`; panics otherwise.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
