//! Ports for tests that start servers on fixed addresses (node topologies, nats-server):
//! [`free_port`] hands out ports below the ephemeral range (so an outgoing connection's port
//! never takes one between the check and the bind), spread by process id so test binaries
//! running at once rarely meet, each checked free when handed out.

use std::sync::atomic::{AtomicU32, Ordering};

/// A port on 127.0.0.1 that is free now and not handed out before in this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = (std::process::id() % 40) * 300;
    for _ in 0..SPAN {
        let p = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOW} and {}", LOW + SPAN);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(std::net::TcpListener::bind(("127.0.0.1", a)).is_ok());
    }
}
