//! What the process's threads and timers share, below every stage: the background threads'
//! CPU priority, periodic tasks that end with their owner, and the wall clock in words.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Deserialize;

/// How the background threads share the CPU with the request threads
/// (`server.background_priority`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundPriority {
    /// Linux's idle scheduling policy: a waking request thread preempts background work at
    /// once (the lowest login latency); under saturating load the background gets almost no
    /// CPU, so learning sheds its surplus and audit records wait in the spool.
    #[default]
    Idle,
    /// nice +10: background work keeps about a tenth of a contended CPU, so it keeps up for
    /// longer under overload, at the price of a longer latency tail at moderate load.
    Low,
}

/// The background priority chosen in `server.background_priority`, set once at start before
/// any background thread exists (threads of the audit worker and the store read it as they
/// start, wherever they are spawned from).
static BACKGROUND_PRIORITY: AtomicU8 = AtomicU8::new(BackgroundPriority::Idle as u8);

/// Sets the priority [`lower_thread_priority`] applies from now on.
pub(crate) fn set_background_priority(priority: BackgroundPriority) {
    BACKGROUND_PRIORITY.store(priority as u8, Ordering::Relaxed);
}

/// Lowers the calling thread's CPU priority so that background work (recording, learning,
/// audit writes) only uses CPU the request threads leave: under load it falls behind (bounded,
/// metered) instead of delaying logins.
///
/// `idle` (the default): Linux's `SCHED_IDLE` policy. A request thread that wakes up preempts
/// an idle-policy thread at once, while a nice +10 thread keeps its slice. Measured with
/// `bench/scored-logins.sh --rate 2000` (docs/benchmarks.md): the extra p99 of a scored login
/// fell from ~1.3–1.4 ms to ~0.65–0.8 ms. Any thread may lower itself to `SCHED_IDLE` without
/// privileges; should the kernel refuse anyway (a seccomp filter), nice +10 is the fallback.
/// `low`: nice +10 only, which keeps background work going under overload.
pub(crate) fn lower_thread_priority() {
    let idle = BACKGROUND_PRIORITY.load(Ordering::Relaxed) == BackgroundPriority::Idle as u8;
    // SAFETY: plain syscalls on the calling thread (pid 0 / its own tid); failure only leaves
    // the priority as it was.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if !idle || libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }
}

/// Runs `job` on `owner` at once and then every `period` on the runtime `on`, until the last
/// strong reference to `owner` is dropped (the task holds only a weak one). A tick missed
/// while a job ran is not made up for.
pub(crate) fn spawn_every<T, F, Fut>(
    on: &tokio::runtime::Handle,
    owner: &Arc<T>,
    period: Duration,
    job: F,
) where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let owner = Arc::downgrade(owner);
    on.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(owner) = owner.upgrade() else {
                return;
            };
            job(owner).await;
        }
    });
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it): the one way
/// audit records, page tokens, alerts and the timeline check stamp a time.
pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

/// Whole seconds since the Unix epoch (0 before it): deadlines of tokens, TOTP steps,
/// assertions and shared-state rows.
pub fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-24 21:00:05 UTC`, without a date-time dependency.
pub(crate) fn utc(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the calling thread's scheduling policy and nice value.
    fn priority_of_this_thread() -> (i32, i32) {
        // SAFETY: reads the calling thread's own scheduling policy and nice value.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, tid),
            )
        }
    }

    /// Background threads give way to request threads: the idle scheduling policy by default
    /// (or, where the kernel refuses it, nice +10), nice +10 under `low`; on the calling
    /// thread only. One test for both settings: the setting is process-wide.
    #[test]
    fn background_threads_run_at_the_configured_priority_and_only_they_do() {
        let before = priority_of_this_thread();
        let lowered = |priority| {
            set_background_priority(priority);
            std::thread::spawn(|| {
                lower_thread_priority();
                priority_of_this_thread()
            })
            .join()
            .unwrap()
        };
        let (policy, nice) = lowered(BackgroundPriority::Idle);
        assert!(
            policy == libc::SCHED_IDLE || nice == 10,
            "idle: policy {policy} nice {nice}"
        );
        assert_eq!(
            lowered(BackgroundPriority::Low),
            (libc::SCHED_OTHER, 10),
            "low: an ordinary thread at nice +10"
        );
        set_background_priority(BackgroundPriority::default());
        assert_eq!(
            priority_of_this_thread(),
            before,
            "the caller's thread is left alone"
        );
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_795_900_805)),
            "2026-11-28 21:20:05 UTC"
        );
    }

    #[test]
    fn a_periodic_task_runs_until_its_owner_is_dropped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let owner = Arc::new(std::sync::atomic::AtomicU32::new(0));
        spawn_every(
            runtime.handle(),
            &owner,
            Duration::from_secs(1),
            |o| async move {
                o.fetch_add(1, Ordering::Relaxed);
            },
        );
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(2500)).await });
        assert_eq!(
            owner.load(Ordering::Relaxed),
            3,
            "at once, after 1 s and 2 s"
        );
        let weak = Arc::downgrade(&owner);
        drop(owner);
        runtime.block_on(async { tokio::time::sleep(Duration::from_secs(2)).await });
        assert!(
            weak.upgrade().is_none(),
            "the task kept no strong reference"
        );
    }
}
