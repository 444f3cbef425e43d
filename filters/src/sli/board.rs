//! The `/sli` board: process-lifetime success/error counts per (listener, route) and
//! per objective, kept in fixed-size rings of atomic buckets.
//!
//! Memory is bounded: each series is three rings of 60 buckets (1 s, 5 s and 60 s
//! wide: the last 1m, 5m and 1h), each objective adds one ring of
//! [`WINDOW_SLOTS`] buckets spanning its window, and the board holds at most
//! [`MAX_SERIES`] series and [`MAX_OBJECTIVES`] objectives. Recording is lock-free
//! (atomics); the maps are only locked to find or create a series, which the HTTP
//! filter does once per route and caches.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// At most this many (listener, route) series; further ones share `_overflow`.
pub const MAX_SERIES: usize = 4096;
/// At most this many objectives.
pub const MAX_OBJECTIVES: usize = 256;
/// Buckets in an objective's window ring (30d => 6h buckets).
pub const WINDOW_SLOTS: usize = 120;
/// The route name used once [`MAX_SERIES`] is reached.
pub const OVERFLOW_ROUTE: &str = "_overflow";

const RING_SLOTS: usize = 60;

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Bucket {
    /// Bucket index + 1 that the counts belong to (0 = never used).
    epoch: AtomicU64,
    ok: AtomicU64,
    err: AtomicU64,
}

/// A ring of `slots` buckets, each `width` seconds wide.
#[derive(Debug)]
struct Ring {
    width: u64,
    slots: Box<[Bucket]>,
}

impl Ring {
    fn new(width: u64, slots: usize) -> Ring {
        Ring {
            width: width.max(1),
            slots: (0..slots.max(1)).map(|_| Bucket::default()).collect(),
        }
    }

    fn record(&self, now: u64, success: bool) {
        let idx = now / self.width;
        let len = self.slots.len() as u64;
        let b = &self.slots[(idx % len) as usize];
        let want = idx + 1;
        let seen = b.epoch.load(Ordering::Acquire);
        if seen > want {
            return; // a late record for a bucket already reused; drop it
        }
        // The thread that moves the bucket to a new epoch clears it. A record racing
        // with the clear can be lost; that costs at most a few counts per rollover.
        if seen < want
            && b.epoch
                .compare_exchange(seen, want, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.ok.store(0, Ordering::Release);
            b.err.store(0, Ordering::Release);
        }
        if success {
            b.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            b.err.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (success, error) over the last `n` buckets, the current one included.
    fn sum(&self, now: u64, n: usize) -> (u64, u64) {
        let cur = now / self.width;
        let len = self.slots.len() as u64;
        let (mut ok, mut err) = (0, 0);
        for k in 0..(n.min(self.slots.len()) as u64) {
            let Some(idx) = cur.checked_sub(k) else { break };
            let b = &self.slots[(idx % len) as usize];
            if b.epoch.load(Ordering::Acquire) == idx + 1 {
                ok += b.ok.load(Ordering::Relaxed);
                err += b.err.load(Ordering::Relaxed);
            }
        }
        (ok, err)
    }

    fn sum_all(&self, now: u64) -> (u64, u64) {
        self.sum(now, self.slots.len())
    }
}

/// Success/error counts of one (listener, route) or one objective.
#[derive(Debug)]
pub struct Series {
    ok: AtomicU64,
    err: AtomicU64,
    last_1m: Ring,
    last_5m: Ring,
    last_1h: Ring,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            ok: AtomicU64::new(0),
            err: AtomicU64::new(0),
            last_1m: Ring::new(1, RING_SLOTS),
            last_5m: Ring::new(5, RING_SLOTS),
            last_1h: Ring::new(60, RING_SLOTS),
        }
    }
}

impl Series {
    /// Record one outcome at `now` (seconds since the board started).
    pub fn record_at(&self, now: u64, success: bool) {
        if success {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.err.fetch_add(1, Ordering::Relaxed);
        }
        self.last_1m.record(now, success);
        self.last_5m.record(now, success);
        self.last_1h.record(now, success);
    }

    fn snapshot(&self, now: u64) -> SeriesView {
        let ok = self.ok.load(Ordering::Relaxed);
        let err = self.err.load(Ordering::Relaxed);
        SeriesView {
            requests: ok + err,
            errors: err,
            last_1m: Window::of(self.last_1m.sum_all(now)),
            last_5m: Window::of(self.last_5m.sum_all(now)),
            last_1h: Window::of(self.last_1h.sum_all(now)),
        }
    }
}

/// How an objective selects requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub routes: Vec<String>,
    pub clusters: Vec<String>,
}

/// What an `objectives:` entry declares.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveSpec {
    pub name: String,
    /// Target success percentage, e.g. 99.9.
    pub target: f64,
    pub window: Duration,
    pub selector: Selector,
}

/// An objective's state: the same rings as a route plus one over its window.
#[derive(Debug)]
pub struct Objective {
    name: Box<str>,
    window: Duration,
    target_bits: AtomicU64,
    selector: RwLock<Selector>,
    series: Series,
    window_ring: Ring,
}

impl Objective {
    fn new(spec: &ObjectiveSpec) -> Objective {
        let secs = spec.window.as_secs().max(1);
        Objective {
            name: spec.name.as_str().into(),
            window: spec.window,
            target_bits: AtomicU64::new(spec.target.to_bits()),
            selector: RwLock::new(spec.selector.clone()),
            series: Series::default(),
            window_ring: Ring::new(secs.div_ceil(WINDOW_SLOTS as u64), WINDOW_SLOTS),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Record one outcome at `now` (seconds since the board started).
    pub fn record_at(&self, now: u64, success: bool) {
        self.series.record_at(now, success);
        self.window_ring.record(now, success);
    }

    fn target(&self) -> f64 {
        f64::from_bits(self.target_bits.load(Ordering::Relaxed))
    }
}

/// A success ratio over one window.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    /// `None` when there were no requests.
    pub success_ratio: Option<f64>,
}

impl Window {
    fn of((ok, err): (u64, u64)) -> Window {
        let n = ok + err;
        Window {
            requests: n,
            errors: err,
            success_ratio: if n == 0 {
                None
            } else {
                Some(ok as f64 / n as f64)
            },
        }
    }

    fn error_ratio(&self) -> Option<f64> {
        self.success_ratio.map(|s| 1.0 - s)
    }
}

#[derive(Debug, Clone, Serialize)]
struct SeriesView {
    requests: u64,
    errors: u64,
    last_1m: Window,
    last_5m: Window,
    last_1h: Window,
}

#[derive(Debug, Serialize)]
struct RouteView {
    listener: String,
    route: String,
    #[serde(flatten)]
    series: SeriesView,
}

#[derive(Debug, Serialize)]
struct ObjectiveView {
    name: String,
    target: f64,
    window_seconds: u64,
    routes: Vec<String>,
    clusters: Vec<String>,
    #[serde(flatten)]
    series: SeriesView,
    window: Window,
    /// 1.0 = untouched, 0.0 = spent, negative = overspent; `None` without traffic.
    error_budget_remaining: Option<f64>,
    /// Error ratio divided by the allowed error ratio (1.0 spends the budget exactly
    /// over the window).
    burn_rate_5m: Option<f64>,
    burn_rate_1h: Option<f64>,
}

#[derive(Debug, Serialize)]
struct BoardView {
    uptime_seconds: u64,
    routes: Vec<RouteView>,
    objectives: Vec<ObjectiveView>,
}

/// The SLI state behind `GET /sli`. One per process, in [`crate::Services`]; a
/// cheap handle (clones share the state), so filters keep one.
#[derive(Debug, Clone, Default)]
pub struct Board {
    inner: Arc<Inner>,
}

type SeriesMap = BTreeMap<(Box<str>, Box<str>), Arc<Series>>;

#[derive(Debug)]
struct Inner {
    base: Instant,
    series: RwLock<SeriesMap>,
    objectives: RwLock<BTreeMap<Box<str>, Arc<Objective>>>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            base: Instant::now(),
            series: RwLock::new(BTreeMap::new()),
            objectives: RwLock::new(BTreeMap::new()),
        }
    }
}

impl Board {
    /// Seconds since the board was created (the rings' clock).
    pub fn now(&self) -> u64 {
        self.inner.base.elapsed().as_secs()
    }

    /// The series of (listener, route), created on first use. Callers on a hot path
    /// should keep the returned handle. Past [`MAX_SERIES`], new routes share the
    /// listener's [`OVERFLOW_ROUTE`] series.
    pub fn series(&self, listener: &str, route: &str) -> Arc<Series> {
        let key = (Box::<str>::from(listener), Box::<str>::from(route));
        if let Some(s) = read(&self.inner.series).get(&key) {
            return s.clone();
        }
        let mut map = write(&self.inner.series);
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        let key = if map.len() >= MAX_SERIES {
            (key.0, Box::<str>::from(OVERFLOW_ROUTE))
        } else {
            key
        };
        map.entry(key).or_default().clone()
    }

    /// Register or update an objective by name. A changed window restarts its
    /// counts; a changed target or selector keeps them. `None` past
    /// [`MAX_OBJECTIVES`].
    pub fn objective(&self, spec: &ObjectiveSpec) -> Option<Arc<Objective>> {
        let mut map = write(&self.inner.objectives);
        if let Some(o) = map.get(spec.name.as_str()) {
            if o.window == spec.window {
                o.target_bits
                    .store(spec.target.to_bits(), Ordering::Relaxed);
                *write(&o.selector) = spec.selector.clone();
                return Some(o.clone());
            }
        } else if map.len() >= MAX_OBJECTIVES {
            tracing::warn!(objective = %spec.name, max = MAX_OBJECTIVES, "too many sli objectives; ignoring");
            return None;
        }
        let o = Arc::new(Objective::new(spec));
        map.insert(spec.name.as_str().into(), o.clone());
        Some(o)
    }

    /// Record one outcome for (listener, route) and for every objective whose
    /// `routes` name this route. The entry point for protocols without the HTTP
    /// filter chain (the Thrift proxy); takes the board's read locks briefly.
    pub fn record(&self, listener: &str, route: &str, success: bool, _duration: Duration) {
        self.record_at(self.now(), listener, route, success);
    }

    #[cfg(test)]
    pub(crate) fn render_text_at_for_tests(&self, now: u64) -> String {
        self.render_text_at(now)
    }

    #[cfg(test)]
    pub(crate) fn render_json_at_for_tests(&self, now: u64) -> String {
        serde_json::to_string(&self.view(now)).unwrap_or_default()
    }

    fn record_at(&self, now: u64, listener: &str, route: &str, success: bool) {
        self.series(listener, route).record_at(now, success);
        for o in read(&self.inner.objectives).values() {
            if read(&o.selector).routes.iter().any(|r| r == route) {
                o.record_at(now, success);
            }
        }
    }

    fn view(&self, now: u64) -> BoardView {
        let routes = read(&self.inner.series)
            .iter()
            .map(|((l, r), s)| RouteView {
                listener: l.to_string(),
                route: r.to_string(),
                series: s.snapshot(now),
            })
            .collect();
        let objectives = read(&self.inner.objectives)
            .values()
            .map(|o| {
                let sel = read(&o.selector).clone();
                let target = o.target();
                let allowed = (1.0 - target / 100.0).max(f64::MIN_POSITIVE);
                let window = Window::of(o.window_ring.sum_all(now));
                let series = o.series.snapshot(now);
                let burn = |w: &Window| w.error_ratio().map(|e| e / allowed);
                ObjectiveView {
                    name: o.name.to_string(),
                    target,
                    window_seconds: o.window.as_secs(),
                    routes: sel.routes,
                    clusters: sel.clusters,
                    error_budget_remaining: window.error_ratio().map(|e| 1.0 - e / allowed),
                    burn_rate_5m: burn(&series.last_5m),
                    burn_rate_1h: burn(&series.last_1h),
                    window,
                    series,
                }
            })
            .collect();
        BoardView {
            uptime_seconds: now,
            routes,
            objectives,
        }
    }

    /// `GET /sli?format=json`.
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(&self.view(self.now())).unwrap_or_else(|e| {
            // Serializing plain structs of numbers and strings cannot fail; keep the
            // endpoint well-formed regardless.
            format!("{{\"error\":\"{e}\"}}")
        })
    }

    /// `GET /sli`: one aligned table per section.
    pub fn render_text(&self) -> String {
        self.render_text_at(self.now())
    }

    fn render_text_at(&self, now: u64) -> String {
        let v = self.view(now);
        let mut out = String::new();
        let _ = writeln!(out, "# attache sli (uptime {}s)", v.uptime_seconds);
        let _ = writeln!(out, "\n## routes");
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>10} {:>8} {:>9} {:>9} {:>9}",
            "listener", "route", "requests", "errors", "ok_1m", "ok_5m", "ok_1h"
        );
        for r in &v.routes {
            let _ = writeln!(
                out,
                "{:<16} {:<24} {:>10} {:>8} {:>9} {:>9} {:>9}",
                r.listener,
                r.route,
                r.series.requests,
                r.series.errors,
                pct(r.series.last_1m.success_ratio),
                pct(r.series.last_5m.success_ratio),
                pct(r.series.last_1h.success_ratio),
            );
        }
        let _ = writeln!(out, "\n## objectives");
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8}",
            "objective",
            "target",
            "window",
            "requests",
            "ok_1m",
            "ok_5m",
            "ok_1h",
            "budget",
            "burn_5m",
            "burn_1h"
        );
        for o in &v.objectives {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8}",
                o.name,
                format!("{}%", o.target),
                human_secs(o.window_seconds),
                o.window.requests,
                pct(o.series.last_1m.success_ratio),
                pct(o.series.last_5m.success_ratio),
                pct(o.series.last_1h.success_ratio),
                pct(o.error_budget_remaining),
                ratio(o.burn_rate_5m),
                ratio(o.burn_rate_1h),
            );
        }
        out
    }
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{:.3}%", x * 100.0),
        None => "-".to_string(),
    }
}

fn ratio(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{x:.2}"),
        None => "-".to_string(),
    }
}

fn human_secs(s: u64) -> String {
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
