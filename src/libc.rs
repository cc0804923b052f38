//! What the core knows of glibc's user-space conventions, as `kernel.rs` knows the
//! kernel's: the signal trampoline a handler returns through, and the thread entry.

use crate::symbols::Symbol;

/// The trampoline whose address the kernel writes as a signal handler's return address.
pub const RESTORE_RT: &str = "__restore_rt";

/// Where a new thread starts: these call [`THREAD_START`] through a pointer, which calls
/// the thread's start routine through one, so no direct call names either.
const THREAD_ENTRIES: [&str; 4] = ["clone3", "__clone3", "clone", "__clone"];
pub const THREAD_START: &str = "start_thread";

pub fn is_thread_entry(f: &Symbol) -> bool {
    THREAD_ENTRIES.contains(&f.base_name())
}
