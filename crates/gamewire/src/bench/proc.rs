//! What the bench reads from /proc: a process's CPU time, current and peak RSS, and the machine's details.

use std::io;

/// CPU time of a process in clock ticks, as `/proc/<pid>/stat` reports it (all threads included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    /// Field 14: time in user mode.
    pub(crate) utime: u64,
    /// Field 15: time in kernel mode.
    pub(crate) stime: u64,
}

impl CpuTicks {
    pub(crate) fn total(self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses `utime` and `stime` (fields 14 and 15) out of the text of `/proc/<pid>/stat`.
///
/// Field 2, `comm`, is the executable's name in parentheses and may itself contain spaces and
/// parentheses, so the fields after it are found from the LAST `)` of the line.
pub(crate) fn parse_stat_cpu(stat: &str) -> Option<CpuTicks> {
    let close = stat.rfind(')')?;
    // Fields 3.. (state, ppid, ...): utime is field 14, so index 11 here, stime index 12.
    let mut rest = stat[close + 1..].split_whitespace().skip(11);
    let utime = rest.next()?.parse().ok()?;
    let stime = rest.next()?.parse().ok()?;
    Some(CpuTicks { utime, stime })
}

/// Parses the peak resident set size, `VmHWM`, out of `/proc/<pid>/status`, in bytes.
pub(crate) fn parse_vm_hwm(status: &str) -> Option<u64> {
    parse_status_bytes(status, "VmHWM")
}

/// Parses the current resident set size, `VmRSS`, out of `/proc/<pid>/status`, in bytes.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_bytes(status, "VmRSS")
}

/// The field `key` of `/proc/<pid>/status` (`VmHWM:   12345 kB`), in bytes.
fn parse_status_bytes(status: &str, key: &str) -> Option<u64> {
    let line =
        status.lines().find(|line| line.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')))?;
    let mut words = line[key.len() + 1..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let multiplier = match words.next() {
        Some("kB") | Some("KB") | Some("kb") => 1024,
        None => 1,
        Some(_) => return None,
    };
    Some(value * multiplier)
}

/// The CPU's model name from /proc/cpuinfo: `model name` on x86, other keys elsewhere.
pub(crate) fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    for key in ["model name", "Model", "Hardware", "cpu model", "uarch", "cpu"] {
        let found = cpuinfo.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == key && !value.trim().is_empty()).then(|| value.trim().to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// CPU ticks of process `pid` so far.
pub(crate) fn cpu_ticks(pid: u32) -> io::Result<CpuTicks> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse /proc/{pid}/stat")))
}

/// Peak RSS of process `pid`, bytes.
pub(crate) fn peak_rss_bytes(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_hwm(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmHWM in /proc/{pid}/status")))
}

/// Current RSS of process `pid`, bytes.
pub(crate) fn rss_bytes(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmRSS in /proc/{pid}/status")))
}

/// Clock ticks per second, to turn /proc's CPU ticks into seconds.
pub(crate) fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// Where and on what the benchmark ran.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) cpu_model: String,
}

impl Machine {
    pub(crate) fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let listed = cpuinfo.lines().filter(|line| line.starts_with("processor")).count();
        let cores =
            if listed > 0 { listed } else { std::thread::available_parallelism().map_or(1, usize::from) };
        Machine {
            cores,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string()),
            cpu_model: parse_cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_follow_the_last_parenthesis() {
        let plain = "4242 (gamewire) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 100 \
                     12345678 2048 18446744073709551615";
        assert_eq!(parse_stat_cpu(plain), Some(CpuTicks { utime: 250, stime: 75 }));
        assert_eq!(parse_stat_cpu(plain).map(CpuTicks::total), Some(325));
        // comm may hold spaces and parentheses, even ") S 1 2": only the last ')' ends it.
        let tricky = "77 (a) b) S 9 9 (x) S 1 2 3 4 5 6 7 8) R 1 77 77 0 -1 0 5 0 0 0 11 22 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(tricky), Some(CpuTicks { utime: 11, stime: 22 }));
        assert_eq!(parse_stat_cpu("12 (short) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu("no parenthesis at all"), None);
        assert_eq!(parse_stat_cpu("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 3"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tgamewire\nVmPeak:\t  200000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t   12000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\nVmRSS:\t 1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\tlots kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t5 MB\n"), None);
        assert_eq!(parse_vm_rss(status), Some(12000 * 1024));
        assert_eq!(parse_vm_rss("VmRSSx:\t1 kB\n"), None);
    }

    #[test]
    fn cpu_model_is_found() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\n\
                       model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("Intel(R) Xeon(R) CPU @ 2.20GHz"));
        assert_eq!(parse_cpu_model("processor : 0\nHardware : BCM2835\n").as_deref(), Some("BCM2835"));
        assert_eq!(parse_cpu_model(""), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        assert!(peak_rss_bytes(pid).unwrap() > 0);
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(ticks_per_second() > 0);
    }
}
