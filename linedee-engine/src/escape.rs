//! The escape scan: the processes of an attempt that left its process group (`setsid`) but
//! still carry its `line_D`, found in `/proc` among those started after the attempt's leader,
//! so that they are stopped with the group ([`crate::process`]).

use std::time::Duration;

/// Longest the escape scan waits for a process inside `execve` to show its new environment.
/// The wait ends as soon as it shows, so it costs only when a scan catches a process there.
/// Generous, because a loaded machine can hold a process inside `execve` for tens of
/// milliseconds: with 20 ms, a CI run of the unit tests on 2 vCPUs missed one.
const EXEC_SETTLE: Duration = Duration::from_secs(1);

/// The pids of the attempt processes this engine started and has not reaped yet. Each is the
/// leader of another attempt, started by the engine itself, so it never descends from a task
/// and its environment need not be read when a scan looks for escaped processes.
pub(crate) fn leaders() -> std::sync::MutexGuard<'static, std::collections::HashSet<u32>> {
    static LEADERS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u32>>> =
        std::sync::OnceLock::new();
    LEADERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pids of processes (other than this one) whose environment has exactly `marker`, among
/// those started after `leader` (the attempt's first process): only they can descend from
/// it. Other attempts' leaders are passed over ([`leaders`]). The scan of `/proc` runs on the
/// blocking pool.
pub(crate) async fn escaped(marker: &[u8], leader: Option<i32>) -> Vec<i32> {
    if marker.is_empty() {
        return Vec::new();
    }
    let marker = marker.to_vec();
    tokio::task::spawn_blocking(move || scan_environs(&marker, leader))
        .await
        .unwrap_or_default()
}

pub(crate) fn scan_environs(marker: &[u8], leader: Option<i32>) -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let started = Started::since(leader);
    let others: Vec<u32> = leaders().iter().copied().collect();
    // One buffer for every process (grown by the first read), and plain reads: `fs::read`
    // would also ask for a size (which /proc does not know) and probe with small reads,
    // several calls per process.
    let mut buf = Vec::new();
    let mut found = Vec::new();
    let mut execing = Vec::new();
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && started.may_hold(*pid) && !others.contains(pid))
    {
        match environ_of(pid, marker, &mut buf) {
            Environ::Has => found.push(pid),
            Environ::HasNot => {}
            Environ::Execing => execing.push(pid),
        }
    }
    // A process caught inside `execve` (an escapee starting its next program, say) shows its
    // environment once the new program's is set up, a moment later.
    let deadline = std::time::Instant::now() + EXEC_SETTLE;
    while !execing.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        execing.retain(|pid| match environ_of(*pid, marker, &mut buf) {
            Environ::Has => {
                found.push(*pid);
                false
            }
            Environ::HasNot => false,
            Environ::Execing => true,
        });
    }
    found
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// The pids given out since an attempt's leader started. Linux hands pids out in increasing
/// order, wrapping to low numbers past `pid_max`; `ns_last_pid` is the last one given out in
/// this pid namespace. So a descendant of the leader has a pid after the leader's and up to
/// the last (across the wrap, if there was one). Unknown, every pid may be one.
#[derive(Debug, Clone, Copy)]
struct Started {
    range: Option<(u32, u32)>,
}

impl Started {
    fn since(leader: Option<i32>) -> Self {
        // Only when `/proc` shows this process's own pid namespace (the one `ns_last_pid`
        // and the leader's pid are of).
        let same_namespace = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str()?.parse::<u32>().ok())
            == Some(std::process::id());
        let last = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|_| same_namespace);
        let leader = leader.and_then(|l| u32::try_from(l).ok());
        Started {
            range: leader.zip(last),
        }
    }

    fn may_hold(self, pid: u32) -> bool {
        match self.range {
            None => true,
            Some((leader, last)) if leader <= last => pid > leader && pid <= last,
            // Wrapped since the leader started.
            Some((leader, last)) => pid > leader || pid <= last,
        }
    }
}

/// What a process's environment says about an attempt's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Environ {
    /// It has `marker` as one of its entries.
    Has,
    /// It has not, or the process is gone (or is a kernel thread, or a zombie).
    HasNot,
    /// None to read yet: the process is inside `execve`, past the old program and before the
    /// new one's environment is set up.
    Execing,
}

/// Whether the environment of `pid` has exactly `marker` as one of its entries, has not, or
/// is not shown yet (inside `execve`). `buf` is scratch space, grown when an environment does
/// not fit.
fn environ_of(pid: u32, marker: &[u8], buf: &mut Vec<u8>) -> Environ {
    use std::io::Read as _;
    let Ok(mut environ) = std::fs::File::open(format!("/proc/{pid}/environ")) else {
        return Environ::HasNot;
    };
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize((buf.len() * 2).max(4096), 0);
        }
        match environ.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Environ::HasNot,
        }
    }
    if filled == 0 && execing(pid) {
        return Environ::Execing;
    }
    if buf[..filled].split(|b| *b == 0).any(|var| var == marker) {
        Environ::Has
    } else {
        Environ::HasNot
    }
}

/// Whether `pid`, whose environment reads empty, is inside `execve`: a live user process
/// whose memory has no environment area yet (`env_end`, field 51 of `/proc/{pid}/stat`, is
/// 0). A program started with an empty environment has one, of length 0; kernel threads
/// (flag `PF_KTHREAD`) and zombies have no memory at all.
fn execing(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The fields after the command name, which is in parentheses and may hold anything.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state); field n is `fields[n - 3]`.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let state = fields.first().copied().unwrap_or("X");
    let kthread = field(9).is_none_or(|flags| flags & PF_KTHREAD != 0);
    !kthread && !matches!(state, "Z" | "X" | "x") && field(51) == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_entry_is_found_whole_past_the_first_buffer() {
        let environ = std::fs::read("/proc/self/environ").expect("environ");
        let last = environ
            .split(|b| *b == 0)
            .rfind(|var| !var.is_empty())
            .expect("an entry");
        let me = std::process::id();
        let mut buf = vec![0u8; 1];
        assert_eq!(environ_of(me, last, &mut buf), Environ::Has);
        assert!(buf.len() >= environ.len(), "the buffer grew");
        assert!(
            environ_of(me, &last[..last.len() - 1], &mut buf) == Environ::HasNot,
            "whole entries only"
        );
        assert_eq!(
            environ_of(u32::MAX, last, &mut buf),
            Environ::HasNot,
            "no such process"
        );
    }

    #[test]
    fn a_process_caught_inside_execve_is_found_once_its_environment_shows() {
        let marker = "line_D={\"task_id\":\"exec.0.0\"}";
        let (k, v) = marker.split_once('=').expect("k=v");
        // `spawn` returns while the child may still be inside `execve`, when its environment reads
        // empty; scanning at once, some of these catch it there.
        for _ in 0..20 {
            let mut other = std::process::Command::new("sleep")
                .arg("30")
                .env(k, v)
                .spawn()
                .expect("spawn");
            let pid = other.id();
            let found = scan_environs(marker.as_bytes(), i32::try_from(pid - 1).ok());
            let _ = other.kill();
            let _ = other.wait();
            assert_eq!(found, vec![i32::try_from(pid).expect("pid")]);
        }
    }

    #[test]
    fn an_empty_environment_or_a_zombie_is_not_taken_for_an_exec_in_progress() {
        let marker = b"line_D=x";
        let mut buf = Vec::new();
        let settled = |pid: u32, buf: &mut Vec<u8>| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match environ_of(pid, marker, buf) {
                    Environ::Execing if std::time::Instant::now() < deadline => {
                        std::thread::yield_now();
                    }
                    seen => return seen,
                }
            }
        };
        // Started with no environment at all: it reads empty, and is not inside `execve`.
        let mut bare = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .spawn()
            .expect("spawn");
        assert_eq!(settled(bare.id(), &mut buf), Environ::HasNot);
        let _ = bare.kill();
        let _ = bare.wait();
        // Exited and not waited for: a zombie, with no memory.
        let mut zombie = std::process::Command::new("true").spawn().expect("spawn");
        let pid = zombie.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        }) {
            assert!(std::time::Instant::now() < deadline, "never a zombie");
            std::thread::yield_now();
        }
        assert_eq!(environ_of(pid, marker, &mut buf), Environ::HasNot);
        let _ = zombie.wait();
    }
}
