//! The first seccomp filter of every sandbox: only the native system call ABI.
//!
//! Owns: the seven-instruction filter below, installed before the rule filter; it guards
//! what a rule filter keyed on system call names cannot: the x32 bit and compat entries.
//! Must never: let a compat (32-bit or x32) system call run in a sandbox.

use std::io;

/// `AUDIT_ARCH_*` of the native system call ABI (include/uapi/linux/audit.h).
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;

/// Installs a seccomp filter that kills the command at its first system call made
/// through another ABI than the native one: the 32-bit entry (`int $0x80` or a 32-bit
/// binary on x86_64, AArch32 on arm64) and x32.
///
/// Why: the kernel runs cgroup sockopt programs only for native calls
/// (`do_sock_setsockopt(sock, in_compat_syscall(), …)` in net/socket.c skips them for
/// compat ones), so a 32-bit `setsockopt` would join multicast groups or set routing
/// headers past `hb_setsockopt`. The cost: 32-bit binaries do not run in a sandbox.
///
/// # Safety
/// Called in the sandbox's init before exec: the filter lives on the stack, prctl(2) only.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub unsafe fn native_syscalls_only() -> io::Result<()> {
    // Classic BPF over `struct seccomp_data` { nr: u32 at 0, arch: u32 at 4, … }.
    const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    /// `__X32_SYSCALL_BIT`: x32 calls arrive with the x86_64 arch and this bit in `nr`.
    const X32_BIT: u32 = 0x4000_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        op(LD_ABS_W, 0, 0, 4),
        op(JEQ_K, 1, 0, NATIVE_ARCH),
        op(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(LD_ABS_W, 0, 0, 0),
        op(JGE_K, 0, 1, X32_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at a filter that outlives the call; no_new_privs is set.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const prog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Other architectures: no filter (their compat ABIs, if any, are not handled).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub unsafe fn native_syscalls_only() -> io::Result<()> {
    Ok(())
}
