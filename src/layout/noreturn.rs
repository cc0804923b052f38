//! Functions known by name not to return, and a predicate over call targets
//! built from any symbol source.

use crate::symbols::{base_name, Symbols};

/// Functions that never return (objtool's list plus common user-space ones).
pub const NORETURN: &[&str] = &[
    "abort",
    "exit",
    "_exit",
    "_Exit",
    "quick_exit",
    "__stack_chk_fail",
    "__chk_fail",
    "__fortify_fail",
    "__fortify_fail_abort",
    "__libc_fatal",
    "__libc_message",
    "__assert_fail",
    "__assert_perror_fail",
    "__malloc_assert",
    "err",
    "errx",
    "verr",
    "verrx",
    "longjmp",
    "siglongjmp",
    "_longjmp",
    "__longjmp_chk",
    "__libc_longjmp",
    "__libc_siglongjmp",
    "__pthread_unwind",
    "__pthread_unwind_next",
    "pthread_exit",
    "__cxa_throw",
    "__cxa_rethrow",
    "_Unwind_Resume",
    "__cxa_bad_cast",
    "__cxa_pure_virtual",
    "_dl_signal_error",
    "_dl_signal_exception",
    "_dl_fatal_printf",
    "_dl_exception_create_format",
    "__libc_dynarray_at_failure",
    "__libc_start_call_main",
    "_startup_fatal",
    "__fdelt_warn",
    "Py_FatalError",
    "_Py_FatalErrorFunc",
    "_Py_FatalErrorFormat",
    "Py_Exit",
    "_Py_FatalRefcountErrorFunc",
    "fatal_error",
    "fatal",
    "perror_with_name",
    "error_no_arg",
    "internal_error",
    "throw_error",
    "throw_exception",
    "malloc_failure",
    "xalloc_die",
    "__gnu_cxx::__verbose_terminate_handler",
    "_ZSt9terminatev",
    "_ZSt20__throw_length_errorPKc",
    "_ZSt17__throw_bad_allocv",
    "_ZSt19__throw_logic_errorPKc",
    "_ZSt24__throw_out_of_range_fmtPKcz",
    "_ZSt20__throw_out_of_rangePKc",
    "_ZSt28__throw_bad_array_new_lengthv",
    "_ZSt16__throw_bad_castv",
    "__cxa_throw_bad_array_new_length",
    // kernel (objtool global_noreturns, 6.1)
    "panic",
    "do_exit",
    "do_task_dead",
    "make_task_dead",
    "kthread_exit",
    "rewind_stack_and_make_dead",
    "cpu_startup_entry",
    "machine_real_restart",
    "usercopy_abort",
    "__module_put_and_kthread_exit",
    "snp_abort",
    "stop_this_cpu",
    "panic_smp_self_stop",
    "nmi_panic_self_stop",
    "sev_es_terminate",
    "hlt_play_dead",
    "play_dead",
    "fortify_panic",
    "__ubsan_handle_builtin_unreachable",
    "kunit_try_catch_throw",
    "ex_handler_msr_mce",
    "mpt_halt_firmware",
    "__invalid_creds",
    "lbug_with_loc",
    "btrfs_assertfail",
    "__reiserfs_panic",
    "arch_call_rest_init",
    "cpu_bringup_and_idle",
    "xen_start_kernel",
    "x86_64_start_kernel",
    "x86_64_start_reservations",
    "start_kernel",
    "rest_init",
    "do_group_exit",
    "__x86_return_thunk_never",
];

/// Is this function name (or its base, without `.cold`/`.isra.0`) a known noreturn function?
pub fn is_noreturn_name(name: &str) -> bool {
    NORETURN.contains(&name) || NORETURN.contains(&base_name(name))
}

/// A call target is noreturn when a symbol starts exactly there and its name is known noreturn.
pub fn noreturn_by_symbols<S: Symbols + ?Sized>(syms: &S) -> impl Fn(u64) -> bool + '_ {
    move |t| syms.lookup(t).is_some_and(|s| s.start == t && is_noreturn_name(&s.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::{Symbol, SymbolTable};

    #[test]
    fn names_and_symbols() {
        assert!(is_noreturn_name("abort"));
        assert!(is_noreturn_name("panic.cold"));
        assert!(!is_noreturn_name("printf"));
        let t = SymbolTable::new(vec![Symbol::new("abort", 0x100, 0x10), Symbol::new("puts", 0x200, 0x10)]);
        let nr = noreturn_by_symbols(&t);
        assert!(nr(0x100));
        assert!(!nr(0x104), "only calls to the start");
        assert!(!nr(0x200));
    }
}
