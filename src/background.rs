//! Work that must not slow beats down: saves and the history's writer
//! run on threads that yield the CPU to ingestion.

/// Makes the calling thread yield the CPU to ingestion: a save or the
/// history's writer is background work, and on a busy core it should take
/// longer rather than slow beats down. `SCHED_IDLE` rather than a nice value: a woken
/// ingestion thread always preempts an idle-class thread at once, so background work
/// that holds a shard's lock when it is descheduled hands the core back as
/// soon as it lets go, instead of running out its time slice.
pub fn lower_priority() {
    // SAFETY: plain syscalls on our own thread id (Linux threads have
    // their own policy and nice value), with a parameter struct that lives
    // across the call; failure only means the work runs at a higher
    // priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 15);
        }
    }
}
