//! Readings from `/proc`: a process's resident memory and CPU time, the
//! machine's CPU time, finding a process by its command line, and the facts
//! that describe the machine in a results section.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` (USER_HZ,
/// 100 on every Linux architecture Herald runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU ticks used by process `pid` (all its threads).
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy and total ticks of the whole machine from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait are the 4th and 5th columns.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU time of the processes of a benchmark at one instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    edge: Option<u64>,
    nats: Option<u64>,
    loadgen: Option<u64>,
    machine: Option<(u64, u64)>,
}

/// CPU used between two snapshots, in percent of one core (200 % = two
/// cores busy), plus the machine's busy share of all its cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// herald-edge.
    pub edge: Option<f64>,
    /// nats-server.
    pub nats: Option<f64>,
    /// This load generator.
    pub loadgen: Option<f64>,
    /// Whole machine, percent of all cores.
    pub machine_busy: Option<f64>,
    /// Everything else on the machine (other processes, the kernel's
    /// softirq work), percent of one core.
    pub others: Option<f64>,
}

impl CpuSnapshot {
    /// Reads the CPU time of `edge`, `nats` and this process now.
    pub fn take(edge: Option<u32>, nats: Option<u32>) -> Self {
        Self::take_all(edge.as_slice(), nats)
    }

    /// Like [`take`](Self::take), adding up several edge processes (none
    /// when any of them cannot be read).
    pub fn take_all(edges: &[u32], nats: Option<u32>) -> Self {
        let edge = if edges.is_empty() {
            None
        } else {
            edges
                .iter()
                .map(|p| process_ticks(&p.to_string()))
                .sum::<Option<u64>>()
        };
        Self {
            at: Instant::now(),
            edge,
            nats: nats.and_then(|p| process_ticks(&p.to_string())),
            loadgen: process_ticks("self"),
            machine: machine_ticks(),
        }
    }

    /// CPU used from `self` to `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUse {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let pct = |a: Option<u64>, b: Option<u64>| {
            Some((b?.saturating_sub(a?)) as f64 / TICKS_PER_SEC / secs * 100.0)
        };
        let machine_busy = match (self.machine, later.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
            }
            _ => None,
        };
        let (edge, nats, loadgen) = (
            pct(self.edge, later.edge),
            pct(self.nats, later.nats),
            pct(self.loadgen, later.loadgen),
        );
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let ours = edge.unwrap_or(0.0) + nats.unwrap_or(0.0) + loadgen.unwrap_or(0.0);
        let others = machine_busy.map(|b| (b * cores - ours).max(0.0));
        CpuUse {
            edge,
            nats,
            loadgen,
            machine_busy,
            others,
        }
    }
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Size of the ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|v| v.parse::<u32>());
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    Some(hi.saturating_sub(lo) + 1)
}

/// The soft and hard open-files limits of this process.
pub fn nofile_limits() -> Option<(u64, u64)> {
    rlimit::getrlimit(rlimit::Resource::NOFILE).ok()
}

/// The first process whose command line contains every one of `needles`.
pub fn find_pid(needles: &[&str]) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if needles.iter().all(|n| cmdline.contains(n)) {
            return Some(pid);
        }
    }
    None
}

/// The machine a benchmark ran on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Processors available (`nproc`).
    pub cpus: usize,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`, in KiB.
    pub mem_total_kib: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's facts.
    pub fn describe() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            cpus,
            cpu_model,
            mem_total_kib,
            kernel,
        }
    }

    /// One line: `2 × AMD EPYC, 23.5 GiB, Linux 6.1`.
    pub fn summary(&self) -> String {
        format!(
            "{} CPUs ({}), {:.1} GiB RAM (MemTotal {} kB), Linux {}",
            self.cpus,
            self.cpu_model,
            self.mem_total_kib as f64 / 1024.0 / 1024.0,
            self.mem_total_kib,
            self.kernel
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        assert!(process_ticks("self").is_some());
        let a = CpuSnapshot::take(None, None);
        let b = CpuSnapshot::take(None, None);
        assert!(a.until(&b).loadgen.is_some());
        assert!(Machine::describe().cpus >= 1);
        assert!(open_fds(std::process::id()).is_some_and(|n| n >= 3));
        assert!(loadavg().is_some() && ephemeral_ports().is_some_and(|n| n > 1000));
    }
}
