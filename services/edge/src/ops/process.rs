//! What Linux says about this process (`/proc/self` and `/proc/stat`): CPU
//! time, memory, open files and start time, for the `process_*` metrics
//! Prometheus dashboards expect. Elsewhere (no `/proc`) there is nothing to
//! say, and the metrics are left out rather than shown as zero.

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 on
/// Linux whatever the kernel's own tick rate).
const TICKS_PER_SECOND: f64 = 100.0;

/// The process figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Reads this process's figures; `None` without a readable `/proc`.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse(&stat, &status, &limits, &boot, open_fds)
}

/// The figures from the text of `/proc/self/stat`, `/proc/self/status`,
/// `/proc/self/limits` and `/proc/stat`.
fn parse(
    stat: &str,
    status: &str,
    limits: &str,
    boot: &str,
    open_fds: u64,
) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing one, which is field 3 (the state).
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let cpu_seconds = (field(14)? + field(15)?) / TICKS_PER_SECOND;
    let started_ticks = field(22)?;
    let boot_time: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        line.split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ProcessStats {
        cpu_seconds,
        resident_bytes: kib("VmRSS:")?,
        virtual_bytes: kib("VmSize:")?,
        open_fds,
        max_fds,
        start_time_seconds: boot_time + started_ticks / TICKS_PER_SECOND,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (herald edge) S 1 4242 4242 0 -1 4194560 1630 0 0 0 \
        250 75 0 0 20 0 9 0 123400 1073741824 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    const STATUS: &str =
        "Name:\therald-edge\nVmSize:\t 1048576 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units\n\
        Max open files            65536                524288               files\n";
    const BOOT: &str = "cpu  1 2 3\nbtime 1764547200\nprocesses 10\n";

    #[test]
    fn reads_cpu_memory_files_and_start_from_proc_text() {
        let s = parse(STAT, STATUS, LIMITS, BOOT, 12).unwrap();
        assert_eq!(s.cpu_seconds, 3.25);
        assert_eq!(s.resident_bytes, 20480 * 1024);
        assert_eq!(s.virtual_bytes, 1048576 * 1024);
        assert_eq!(s.open_fds, 12);
        assert_eq!(s.max_fds, 65536);
        assert_eq!(s.start_time_seconds, 1764547200.0 + 1234.0);
    }

    #[test]
    fn unreadable_text_says_nothing_rather_than_zero() {
        assert_eq!(parse("4242 (x", STATUS, LIMITS, BOOT, 1), None);
        assert_eq!(parse(STAT, "Name: x\n", LIMITS, BOOT, 1), None);
        assert_eq!(parse(STAT, STATUS, LIMITS, "cpu 1\n", 1), None);
    }

    #[test]
    fn this_process_is_readable_on_linux() {
        let s = read().unwrap();
        assert!(s.resident_bytes > 0 && s.open_fds > 0 && s.max_fds > 0);
        assert!(s.start_time_seconds > 1.6e9);
    }
}
