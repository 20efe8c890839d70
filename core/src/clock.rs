//! Where "now" comes from. Every wall-clock read in core goes through a [`Clock`]: the store
//! stamps edits with it, the device's sync driver passes it to the sans-IO engine, and tests and
//! simulations substitute a [`ManualClock`] so that they are deterministic. (The engine and the
//! model never read a clock: `now` is an argument.)

/// Time comes in from outside so tests and simulations are deterministic.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's wall clock: what devices and the relay use. Reads 0 if the system
/// clock is set before 1970.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that moves only when told: for tests and simulations. [`Default`] starts it at 0, the
/// Unix epoch itself.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock reading `start_ms` milliseconds since the Unix epoch until it is advanced.
    pub fn new(start_ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(start_ms))
    }

    /// Moves the clock by `ms` milliseconds: forward, or backward if `ms` is negative (to test
    /// a device whose clock was set back).
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
