//! NUMA nodes and their CPUs from sysfs, and pinning a thread to one CPU.
//!
//! A thread-per-core server pins each worker to a CPU and gives it memory on that CPU's node (see
//! `gamewire_pool::Pool::prefault`). The node layout comes from `/sys/devices/system/node/node*/cpulist`
//! ([sysfs-devices-node]); a kernel without NUMA support has no such directory, and then every
//! online CPU is on node 0. Affinity goes through [sched_setaffinity(2)].
//!
//! [sysfs-devices-node]: https://www.kernel.org/doc/Documentation/ABI/stable/sysfs-devices-node
//! [sched_setaffinity(2)]: https://man7.org/linux/man-pages/man2/sched_setaffinity.2.html

use std::fs;
use std::io;
use std::path::Path;

/// Where sysfs is mounted on a real system; [`nodes_from`] takes it as a parameter for tests.
const SYSFS: &str = "/sys";

/// CPU numbers at or above this are rejected as malformed. The kernel's `NR_CPUS` is at most 8192
/// today; the bound only keeps a corrupt range like `0-4000000000` from allocating gigabytes.
const MAX_CPUS: usize = 1 << 16;

/// One NUMA node and the CPUs on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node number, as in `nodeN`.
    pub id: usize,
    /// The node's CPUs in ascending order. Empty for a memory-only node (some CXL or persistent
    /// memory nodes have no CPUs).
    pub cpus: Vec<usize>,
}

/// The NUMA nodes of this machine, sorted by id, read from sysfs.
///
/// Without NUMA support (no `/sys/devices/system/node`), one node 0 holding every online CPU. If
/// sysfs cannot be read at all, one node 0 holding CPUs `0..n` for `n` from
/// [`std::thread::available_parallelism`] (at least 1). Never empty.
///
/// The CPUs are those that exist, not those this process may run on: intersect with
/// [`current_cpus`] before pinning.
pub fn nodes() -> Vec<Node> {
    nodes_from(Path::new(SYSFS)).unwrap_or_else(|_| vec![Node { id: 0, cpus: fallback_cpus() }])
}

/// As [`nodes`], with sysfs mounted at `root` (`/sys` on a real system): reads
/// `root/devices/system/node/node*/cpulist`, or, when `root/devices/system/node` does not exist or
/// has no `node*` entries, puts the CPUs of `root/devices/system/cpu/online` on node 0 (or
/// `0..available_parallelism` if that file does not exist either). Never returns an empty list.
///
/// # Errors
///
/// Any I/O error reading the directory or a `cpulist` other than the node directory not existing,
/// and [`io::ErrorKind::InvalidData`] if a `cpulist` or `online` file is malformed.
pub fn nodes_from(root: &Path) -> io::Result<Vec<Node>> {
    let system = root.join("devices/system");
    let mut nodes = Vec::new();
    match fs::read_dir(system.join("node")) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                // Only `node<digits>`; the directory also holds `online`, `possible`, `has_cpu`...
                let Some(id) = name.to_str().and_then(|name| name.strip_prefix("node")) else { continue };
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(id) = id.parse() else { continue };
                let cpus = parse_cpulist(&fs::read_to_string(entry.path().join("cpulist"))?)?;
                nodes.push(Node { id, cpus });
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    if nodes.is_empty() {
        let cpus = match fs::read_to_string(system.join("cpu/online")) {
            Ok(text) => parse_cpulist(&text)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => fallback_cpus(),
            Err(error) => return Err(error),
        };
        nodes.push(Node { id: 0, cpus });
    }
    nodes.sort_unstable_by_key(|node| node.id);
    Ok(nodes)
}

/// CPUs `0..n` for `n` from `available_parallelism`, when sysfs says nothing.
fn fallback_cpus() -> Vec<usize> {
    let count = std::thread::available_parallelism().map_or(1, |count| count.get());
    (0..count).collect()
}

/// The id of the node holding `cpu`, or `None` if no node lists it.
///
/// O(total CPUs).
pub fn node_of_cpu(nodes: &[Node], cpu: usize) -> Option<usize> {
    nodes.iter().find(|node| node.cpus.binary_search(&cpu).is_ok()).map(|node| node.id)
}

/// Parses a kernel CPU list such as `0-3,8-11` (the format of `cpulist`, `cpu/online` and
/// `isolcpus`): comma-separated CPU numbers and inclusive ranges, surrounding whitespace (the
/// trailing newline) ignored. An empty list is valid. Returns the CPUs sorted and deduplicated.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidData`] for anything else: an empty item, a non-number, a range whose end
/// is below its start, or a CPU number of 65536 or more.
///
/// # Examples
///
/// ```
/// use gamewire_net::topology::parse_cpulist;
///
/// assert_eq!(parse_cpulist("0-2,8\n")?, [0, 1, 2, 8]);
/// assert!(parse_cpulist("3-1").is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn parse_cpulist(text: &str) -> io::Result<Vec<usize>> {
    let malformed =
        |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("cpu list {text:?}: {why}"));
    let cpu = |number: &str| -> io::Result<usize> {
        // `parse` alone would accept a leading `+`.
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("expected a cpu number"));
        }
        match number.parse() {
            Ok(cpu) if cpu < MAX_CPUS => Ok(cpu),
            _ => Err(malformed("cpu number out of range")),
        }
    };
    let text_trimmed = text.trim();
    let mut cpus = Vec::new();
    if text_trimmed.is_empty() {
        return Ok(cpus);
    }
    for item in text_trimmed.split(',') {
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (cpu(first)?, cpu(last)?);
                if last < first {
                    return Err(malformed("range ends below its start"));
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(cpu(item)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Restricts the calling thread to run only on `cpu`.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] if `cpu` is beyond what an affinity mask can hold (1024 CPUs),
/// the OS error of `sched_setaffinity` (`EINVAL` if `cpu` is offline or outside the process's
/// cpuset), and [`io::ErrorKind::Unsupported`] on systems other than Linux.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    affinity::pin_current_thread(cpu)
}

/// The CPUs the calling thread may run on (its affinity mask), in ascending order.
///
/// # Errors
///
/// The OS error of `sched_getaffinity`, and [`io::ErrorKind::Unsupported`] on systems other than
/// Linux.
pub fn current_cpus() -> io::Result<Vec<usize>> {
    affinity::current_cpus()
}

#[cfg(target_os = "linux")]
mod affinity {
    use std::io;

    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

    pub(super) fn pin_current_thread(cpu: usize) -> io::Result<()> {
        // `CpuSet::set` indexes a fixed-size mask and would panic.
        if cpu >= CpuSet::MAX_CPU {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpu {cpu} is beyond the affinity mask's {} cpus", CpuSet::MAX_CPU),
            ));
        }
        let mut set = CpuSet::new();
        set.set(cpu);
        // `None`: the calling thread.
        Ok(sched_setaffinity(None, &set)?)
    }

    pub(super) fn current_cpus() -> io::Result<Vec<usize>> {
        let set = sched_getaffinity(None)?;
        Ok((0..CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)).collect())
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    use std::io;

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "cpu affinity is only supported on Linux")
    }

    pub(super) fn pin_current_thread(_cpu: usize) -> io::Result<()> {
        Err(unsupported())
    }

    pub(super) fn current_cpus() -> io::Result<Vec<usize>> {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn parses_single_cpus_ranges_and_mixes() {
        assert_eq!(parse_cpulist("0").unwrap(), [0]);
        assert_eq!(parse_cpulist("7\n").unwrap(), [7]);
        assert_eq!(parse_cpulist("0-3").unwrap(), [0, 1, 2, 3]);
        assert_eq!(parse_cpulist("0-3,8-11\n").unwrap(), [0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(parse_cpulist("0,2,4-5,9").unwrap(), [0, 2, 4, 5, 9]);
        assert_eq!(parse_cpulist("5-5").unwrap(), [5]);
        assert_eq!(parse_cpulist("8-9,0-1,1").unwrap(), [0, 1, 8, 9], "sorted and deduplicated");
        assert_eq!(parse_cpulist("").unwrap(), [] as [usize; 0]);
        assert_eq!(parse_cpulist("\n").unwrap(), [] as [usize; 0], "memory-only node");
        assert_eq!(parse_cpulist("65535").unwrap(), [65535]);
    }

    #[test]
    fn malformed_lists_are_errors() {
        for text in [
            ",",
            "0,",
            ",0",
            "0,,1",
            "a",
            "1-",
            "-1",
            "1--2",
            "3-1",
            "0-1-2",
            "+1",
            "1 ,2",
            "0x1",
            "1.5",
            "65536",
            "0-4000000000",
            "99999999999999999999999",
            "0-3:2/4",
            "１",
        ] {
            let error = parse_cpulist(text).expect_err(text);
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{text:?}");
        }
        assert_eq!(
            parse_cpulist("3-1").unwrap_err().to_string(),
            "cpu list \"3-1\": range ends below its start"
        );
    }

    #[test]
    fn node_of_cpu_finds_the_node() {
        let nodes = [Node { id: 0, cpus: vec![0, 1, 4, 5] }, Node { id: 2, cpus: vec![2, 3] }];
        assert_eq!(node_of_cpu(&nodes, 4), Some(0));
        assert_eq!(node_of_cpu(&nodes, 3), Some(2));
        assert_eq!(node_of_cpu(&nodes, 6), None);
        assert_eq!(node_of_cpu(&[], 0), None);
    }

    /// A directory under the system temp dir, unique to this process and call, removed on drop.
    struct FakeSysfs(PathBuf);

    impl FakeSysfs {
        fn new() -> FakeSysfs {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name =
                format!("gamewire-topology-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let root = std::env::temp_dir().join(name);
            fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
            FakeSysfs(root)
        }

        fn write(&self, path: &str, contents: &str) {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_nodes_from_sysfs() {
        let sysfs = FakeSysfs::new();
        sysfs.write("devices/system/cpu/online", "0-7,16-23\n");
        // Out of order on purpose, plus the non-node entries a real directory has.
        sysfs.write("devices/system/node/node1/cpulist", "4-7,20-23\n");
        sysfs.write("devices/system/node/node0/cpulist", "0-3,16-19\n");
        sysfs.write("devices/system/node/node10/cpulist", "\n");
        sysfs.write("devices/system/node/online", "0-1,10\n");
        sysfs.write("devices/system/node/has_cpu", "0-1\n");
        fs::create_dir_all(sysfs.0.join("devices/system/node/power")).unwrap();
        let nodes = nodes_from(&sysfs.0).unwrap();
        assert_eq!(
            nodes,
            [
                Node { id: 0, cpus: vec![0, 1, 2, 3, 16, 17, 18, 19] },
                Node { id: 1, cpus: vec![4, 5, 6, 7, 20, 21, 22, 23] },
                Node { id: 10, cpus: vec![] },
            ]
        );
        assert_eq!(node_of_cpu(&nodes, 18), Some(0));
        assert_eq!(node_of_cpu(&nodes, 21), Some(1));
        assert_eq!(node_of_cpu(&nodes, 8), None);
    }

    #[test]
    fn without_numa_every_online_cpu_is_on_node_zero() {
        let sysfs = FakeSysfs::new();
        sysfs.write("devices/system/cpu/online", "0-5\n");
        assert_eq!(nodes_from(&sysfs.0).unwrap(), [Node { id: 0, cpus: vec![0, 1, 2, 3, 4, 5] }]);
        // Not even `cpu/online`: `available_parallelism` CPUs.
        fs::remove_file(sysfs.0.join("devices/system/cpu/online")).unwrap();
        let nodes = nodes_from(&sysfs.0).unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].id, 0);
        assert_eq!(nodes[0].cpus, fallback_cpus());
        assert!(!nodes[0].cpus.is_empty());
    }

    #[test]
    fn malformed_sysfs_is_an_error() {
        let sysfs = FakeSysfs::new();
        sysfs.write("devices/system/node/node0/cpulist", "0-3,oops\n");
        let error = nodes_from(&sysfs.0).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // A node directory without its `cpulist`.
        let sysfs = FakeSysfs::new();
        fs::create_dir_all(sysfs.0.join("devices/system/node/node0")).unwrap();
        assert_eq!(nodes_from(&sysfs.0).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn real_nodes_are_never_empty() {
        let nodes = nodes();
        assert!(!nodes.is_empty());
        assert!(nodes.windows(2).all(|pair| pair[0].id < pair[1].id), "{nodes:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_restricts_the_thread_to_one_cpu() {
        let allowed = current_cpus().unwrap();
        assert!(!allowed.is_empty());
        // The last allowed CPU, so that on most machines it differs from the default mask.
        let cpu = *allowed.last().unwrap();
        let pinned = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            current_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(pinned, [cpu]);
        // Only the spawned thread was pinned.
        assert_eq!(current_cpus().unwrap(), allowed);
        let nodes = nodes();
        assert!(node_of_cpu(&nodes, cpu).is_some(), "cpu {cpu} on no node of {nodes:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_to_an_impossible_cpu_is_an_error() {
        let error = pin_current_thread(usize::MAX).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn affinity_is_unsupported_elsewhere() {
        assert_eq!(pin_current_thread(0).unwrap_err().kind(), io::ErrorKind::Unsupported);
        assert_eq!(current_cpus().unwrap_err().kind(), io::ErrorKind::Unsupported);
    }
}
