//! The processes the testbed starts: where its binaries live, starting them detached, and
//! stopping them with signals.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Where `raftgated`, `raftgate` and `testbed` live: beside this binary.
pub(crate) fn bin(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(name));
    me.with_file_name(name)
}

/// Starts a process in its own process group (so a Ctrl-C aimed at the testbed reaches it
/// only through an orderly `down`), its output appended to `log`.
pub(crate) fn spawn_detached(cmd: &mut Command, log: std::fs::File) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let err = log.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    Ok(child.id())
}

/// Whether `pid` runs (a zombie does not count: PID 1 here reaps late).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Stops `pid`: SIGTERM, then SIGKILL after `grace`.
pub(crate) fn stop(pid: u32, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else { return };
    let target = Pid::from_raw(raw);
    let _ = kill(target, Signal::SIGTERM);
    let started = Instant::now();
    while alive(pid) && started.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        let _ = kill(target, Signal::SIGKILL);
        let started = Instant::now();
        while alive(pid) && started.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// SIGKILL, as a crash would.
pub(crate) fn crash(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    let Ok(raw) = i32::try_from(pid) else { return };
    let _ = kill(nix::unistd::Pid::from_raw(raw), Signal::SIGKILL);
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops `pid` where it is (SIGSTOP): its sockets stay open, nothing is answered.
pub(crate) fn pause(pid: u32) {
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
}

/// Lets a paused `pid` go on (SIGCONT).
pub(crate) fn resume(pid: u32) {
    signal(pid, nix::sys::signal::Signal::SIGCONT);
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig);
    }
}
