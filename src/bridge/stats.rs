//! Counters the bridge keeps for its own health and for the metrics module to expose.
//!
//! Plain atomics indexed by small enums: cheap on the hot path, and a later Prometheus exporter
//! reads them without touching routing code.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Sse,
    StreamableHttp,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Sse, Transport::StreamableHttp];
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::StreamableHttp => "streamable_http",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    ClientClosed,
    Deleted,
    IdleExpired,
    ChildExited,
    Drained,
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 6] = [
        CloseReason::ClientClosed,
        CloseReason::Deleted,
        CloseReason::IdleExpired,
        CloseReason::ChildExited,
        CloseReason::Drained,
        CloseReason::Shutdown,
    ];
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::Deleted => "deleted",
            CloseReason::IdleExpired => "idle_expired",
            CloseReason::ChildExited => "child_exited",
            CloseReason::Drained => "drained",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub sessions_opened: [AtomicU64; 2],
    pub sessions_active: [AtomicI64; 2],
    pub sessions_closed: [[AtomicU64; 6]; 2],
    /// Age of the oldest open session, refreshed by the idle reaper.
    pub session_oldest_ms: AtomicU64,
    pub requests_total: AtomicU64,
    pub request_errors_total: AtomicU64,
    pub requests_in_flight: AtomicI64,
    pub child_spawns: AtomicU64,
    pub child_restarts: AtomicU64,
    pub child_up: AtomicI64,
    pub keepalive_sent: AtomicU64,
    pub stderr_lines_dropped: AtomicU64,
    pub stdout_lines_skipped: AtomicU64,
}

impl Stats {
    pub fn session_opened(&self, t: Transport) {
        self.sessions_opened[t.idx()].fetch_add(1, Ordering::Relaxed);
        self.sessions_active[t.idx()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn session_closed(&self, t: Transport, r: CloseReason) {
        self.sessions_active[t.idx()].fetch_sub(1, Ordering::Relaxed);
        self.sessions_closed[t.idx()][r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text for the counters kept so far (the full metric set is the metrics issue's).
    pub fn render(&self, ready: bool) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let g = |v: &AtomicI64| v.load(Ordering::Relaxed);
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        s.push_str("# TYPE mcp_bridge_sessions_active gauge\n");
        for t in Transport::ALL {
            let _ = writeln!(
                s,
                "mcp_bridge_sessions_active{{transport=\"{}\"}} {}",
                t.label(),
                g(&self.sessions_active[t.idx()])
            );
        }
        s.push_str("# TYPE mcp_bridge_sessions_opened_total counter\n");
        for t in Transport::ALL {
            let _ = writeln!(
                s,
                "mcp_bridge_sessions_opened_total{{transport=\"{}\"}} {}",
                t.label(),
                c(&self.sessions_opened[t.idx()])
            );
        }
        s.push_str("# TYPE mcp_bridge_sessions_closed_total counter\n");
        for t in Transport::ALL {
            for r in CloseReason::ALL {
                let _ = writeln!(
                    s,
                    "mcp_bridge_sessions_closed_total{{transport=\"{}\",reason=\"{}\"}} {}",
                    t.label(),
                    r.label(),
                    c(&self.sessions_closed[t.idx()][r as usize])
                );
            }
        }
        let _ = writeln!(
            s,
            "# TYPE mcp_bridge_session_oldest_seconds gauge\nmcp_bridge_session_oldest_seconds {:.3}",
            c(&self.session_oldest_ms) as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "# TYPE mcp_bridge_requests_in_flight gauge\nmcp_bridge_requests_in_flight {}",
            g(&self.requests_in_flight)
        );
        let _ = writeln!(
            s,
            "# TYPE mcp_bridge_ready gauge\nmcp_bridge_ready {}",
            u8::from(ready)
        );
        let _ = writeln!(
            s,
            "# TYPE mcp_bridge_child_up gauge\nmcp_bridge_child_up {}",
            g(&self.child_up)
        );
        let _ = writeln!(
            s,
            "# TYPE mcp_bridge_child_spawns_total counter\nmcp_bridge_child_spawns_total {}",
            c(&self.child_spawns)
        );
        let _ = writeln!(
            s,
            "# TYPE mcp_bridge_keepalive_sent_total counter\nmcp_bridge_keepalive_sent_total {}",
            c(&self.keepalive_sent)
        );
        let _ = writeln!(
            s,
            "# TYPE mcp_bridge_build_info gauge\nmcp_bridge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        s
    }
}
