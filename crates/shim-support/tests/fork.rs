//! Fork safety, alone in its own test binary: the unit tests run on threads of one process
//! and may hold the standard streams' locks at the moment of a fork, which says nothing
//! about the shims.

use shim_support::{first_time, guard, init_logging, unsupported};

/// After fork, the child must be able to log without waiting on anything the parent's
/// other threads held. A hang is turned into SIGALRM in the child.
#[test]
fn works_in_a_forked_child() {
    // The logger is set up once per process before any thread forks: a fork in the middle
    // of that one-time set-up would leave the child waiting on it forever.
    init_logging();
    // Keep another thread busy in the helpers while forking.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                unsupported("cuForkBusyLoop");
                let _ = first_time(if i.is_multiple_of(2) { "fork-a" } else { "fork-b" });
                i += 1;
            }
        })
    };
    // SAFETY: the child only calls async-signal-tolerant code paths of ours and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe { libc::alarm(10) };
        unsupported("cuForkChildName");
        let ok = !first_time("cuForkChildName");
        let r = guard(3u32, || panic!("child panic"));
        unsafe { libc::_exit(if ok && r == 3 { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child did not exit normally: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
}
