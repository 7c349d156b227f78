//! The sandbox's seccomp rules as an OCI runtime seccomp profile: what a pod runs under
//! when its container runtime (runc, crun; the kubelet's `Localhost` profiles) applies it.
//!
//! A pod is enrolled by its cgroup, and its sockets meet hb's kernel programs as a
//! sandbox's do; but no `sandbox run` launcher installs filters in it, so everything
//! the cgroup hooks do not see is open there: a 32-bit (`int $0x80`) or x32 system call
//! skips every cgroup sockopt program (`hb-ebpf/src/sockopt.rs`), `AF_PACKET` (with
//! `CAP_NET_RAW`, which runtimes grant by default) and `AF_VSOCK` sockets write past
//! every hook, and io_uring's `IORING_OP_SOCKET` opens any family. This profile closes
//! them with the same table the launcher compiles ([`super::seccomp::rules`]), so the two
//! cannot drift: default allow, every refused call `EPERM` (`clone3` `ENOSYS`), and only
//! the machine's native architecture listed, which makes the runtime's filter kill any
//! call of another ABI (libseccomp's bad-architecture action), as the launcher's first
//! filter does.
//!
//! Written for libseccomp's reading of a profile, which differs from seccompiler's in
//! two ways that would otherwise open holes or refuse too much:
//! - **64-bit comparisons.** The table compares the low 32 bits (every value it checks
//!   is an `int` the kernel truncates). libseccomp compares all 64, so `socket(1 << 32 |
//!   AF_PACKET, …)` would not equal `AF_PACKET` and the kernel would still open one. An
//!   equality is therefore written as `SCMP_CMP_MASKED_EQ` with the mask `0xffffffff`;
//!   a masked test keeps its 32-bit mask; an inequality stays 64-bit, which can only
//!   refuse more (high bits set make it true).
//! - **One comparison per argument.** libseccomp ORs comparisons of the same argument
//!   within one rule (measured with runc 1.1.5 and libseccomp 2.5.4: a rule refusing
//!   families that are neither `AF_UNIX` nor `AF_INET` refused both). The two table
//!   rules that compare an argument more than once are written out: the family
//!   allowlist as one rule per refused family below `AF_MAX` (the kernel refuses the
//!   rest itself, `EAFNOSUPPORT`), and `personality` as "a persona flag set and some
//!   other bit clear" for every such pair, which refuses each value with a flag except
//!   the all-ones query, exactly as the table does for flags (the low byte's execution
//!   domains, which change nothing but `uname`'s machine since Linux 4.1, pass here).
//!   Any other rule of that shape fails [`profile`]: a new rule cannot be dropped
//!   silently.
//!
//! Must never: list an architecture but the native one, or refuse less than the table
//! does (but for `personality`'s low byte, above).

use serde_json::{Value, json};

use super::seccomp::{Cond, Op, Outcome, Rule, rules};

/// The families the kernel knows (include/linux/socket.h `AF_MAX`, Linux 6.18): a
/// family at or above it is refused by `__sock_create` whatever the filter says.
const AF_MAX: u32 = 46;

/// The persona flags of include/uapi/linux/personality.h (`UNAME26` 0x0020000 up to
/// `ADDR_LIMIT_3GB` 0x8000000), bits 17 to 27.
const PERSONA_FLAG_BITS: std::ops::RangeInclusive<u32> = 17..=27;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "the seccomp rule for {syscall} ({condition}) compares one argument more than once, which a runtime's profile cannot say"
    )]
    Inexpressible {
        syscall: &'static str,
        condition: &'static str,
    },
    #[error("no OCI seccomp architecture name for this machine's {0}")]
    Arch(&'static str),
}

/// The profile for a pod under a policy that does (`allow_io_uring`) or does not allow
/// io_uring: an OCI `linux.seccomp` object, which is also the file format of a kubelet
/// `Localhost` profile.
pub fn profile(allow_io_uring: bool) -> Result<Value, OciError> {
    let arch = native_arch()?;
    let mut syscalls = Vec::new();
    for rule in rules() {
        if allow_io_uring && rule.syscalls[0].name == "io_uring_setup" {
            continue;
        }
        let errno = match rule.outcome {
            Outcome::Refused => libc::EPERM,
            Outcome::NoSuchCall => libc::ENOSYS,
            Outcome::Allowed => continue,
        };
        let names: Vec<&str> = rule.syscalls.iter().map(|s| s.name).collect();
        for args in alternatives(rule)? {
            syscalls.push(json!({
                "names": names,
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno,
                "args": args,
            }));
        }
    }
    Ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [arch],
        "syscalls": syscalls,
    }))
}

/// The runtime's name of this machine's architecture.
fn native_arch() -> Result<&'static str, OciError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("SCMP_ARCH_X86_64"),
        "aarch64" => Ok("SCMP_ARCH_AARCH64"),
        other => Err(OciError::Arch(other)),
    }
}

/// A rule's alternatives as profile argument lists (each list all-must-hold, one
/// comparison per argument); an unconditional rule is one empty list.
fn alternatives(rule: &Rule) -> Result<Vec<Vec<Value>>, OciError> {
    if rule.when.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    let mut out = Vec::new();
    for alternative in rule.when {
        if !compares_an_argument_twice(alternative) {
            out.push(alternative.iter().map(comparison).collect());
        } else if rule.syscalls.iter().all(|s| s.name.starts_with("socket"))
            && alternative
                .iter()
                .all(|c| c.arg == 0 && matches!(c.op, Op::Ne(_)))
        {
            out.extend(refused_families(alternative));
        } else if rule.syscalls.iter().all(|s| s.name == "personality") {
            out.extend(persona_flags());
        } else {
            return Err(OciError::Inexpressible {
                syscall: rule.syscalls[0].name,
                condition: rule.condition,
            });
        }
    }
    Ok(out)
}

fn compares_an_argument_twice(alternative: &[Cond]) -> bool {
    alternative
        .iter()
        .enumerate()
        .any(|(i, c)| alternative[..i].iter().any(|d| d.arg == c.arg))
}

/// One comparison, read on the low 32 bits where that matters (see the module doc).
fn comparison(c: &Cond) -> Value {
    match c.op {
        Op::Eq(v) => masked(c.arg, u32::MAX, v),
        Op::Masked { mask, value } => masked(c.arg, mask, value),
        Op::Ne(v) => json!({"index": c.arg, "value": v, "op": "SCMP_CMP_NE"}),
    }
}

/// `(arg & mask) == value` (libseccomp takes the mask first).
fn masked(arg: u8, mask: u32, value: u32) -> Value {
    json!({"index": arg, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"})
}

/// "The family is none of these" as one rule per other family below [`AF_MAX`].
fn refused_families(allowed: &[Cond]) -> Vec<Vec<Value>> {
    let allowed: Vec<u32> = allowed
        .iter()
        .filter_map(|c| match c.op {
            Op::Ne(v) => Some(v),
            _ => None,
        })
        .collect();
    (0..AF_MAX)
        .filter(|f| !allowed.contains(f))
        .map(|f| vec![masked(0, u32::MAX, f)])
        .collect()
}

/// "A persona flag is set and the value is not the all-ones query": for each flag bit,
/// one rule per other bit that is clear (a value other than all-ones has one).
fn persona_flags() -> Vec<Vec<Value>> {
    PERSONA_FLAG_BITS
        .flat_map(|flag| {
            (0..32u32)
                .filter(move |&other| other != flag)
                .map(move |other| vec![masked(0, 1 << flag | 1 << other, 1 << flag)])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the profile's rules for `name` refuse a call whose argument `index` is
    /// `value` (the others 0), read as libseccomp reads them (64-bit, all comparisons of
    /// one entry must hold).
    fn refuses(profile: &Value, name: &str, index: u64, value: u64) -> bool {
        let arg = |i: u64| if i == index { value } else { 0 };
        profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|s| {
                s["names"]
                    .as_array()
                    .expect("names")
                    .iter()
                    .any(|n| n == name)
            })
            .any(|s| {
                s["args"].as_array().expect("args").iter().all(|c| {
                    let a = arg(c["index"].as_u64().expect("index"));
                    let v = c["value"].as_u64().expect("value");
                    match c["op"].as_str().expect("op") {
                        "SCMP_CMP_NE" => a != v,
                        "SCMP_CMP_MASKED_EQ" => a & v == c["valueTwo"].as_u64().expect("two"),
                        other => panic!("unexpected op {other}"),
                    }
                })
            })
    }

    #[test]
    fn every_rule_of_the_table_is_written_out() {
        let p = profile(false).expect("the table converts");
        assert_eq!(p["architectures"].as_array().map(Vec::len), Some(1));
        for rule in rules() {
            if rule.outcome == Outcome::Allowed {
                continue;
            }
            for sys in rule.syscalls {
                assert!(
                    p["syscalls"]
                        .as_array()
                        .expect("syscalls")
                        .iter()
                        .any(|s| s["names"]
                            .as_array()
                            .expect("names")
                            .iter()
                            .any(|n| n == sys.name)),
                    "{} missing",
                    sys.name
                );
            }
        }
        let unconditional = |name: &str| refuses(&p, name, 9, 0);
        assert!(unconditional("bpf") && unconditional("io_uring_setup"));
        assert!(!refuses(
            &profile(true).expect("converts"),
            "io_uring_setup",
            9,
            0
        ));
    }

    #[test]
    fn families_are_refused_on_their_low_32_bits() {
        let p = profile(false).expect("converts");
        let family = |f: u64| refuses(&p, "socket", 0, f);
        for allowed in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert!(!family(allowed as u64), "family {allowed} refused");
        }
        for refused in [libc::AF_PACKET, libc::AF_VSOCK, libc::AF_XDP, 0, 45] {
            assert!(family(refused as u64), "family {refused} passes");
            assert!(
                family(1 << 32 | refused as u64),
                "family {refused} + high bits passes"
            );
        }
        assert!(refuses(&p, "socketpair", 0, libc::AF_PACKET as u64));
    }

    #[test]
    fn personality_refuses_flags_and_keeps_the_query() {
        let p = profile(false).expect("converts");
        let persona = |v: u64| refuses(&p, "personality", 0, v);
        assert!(!persona(0) && !persona(0xffff_ffff) && !persona(8));
        for flag in [
            0x004_0000u64,
            0x040_0000,
            0x010_0000,
            0x800_0000,
            0xf004_0000,
            0xffff_fffe,
        ] {
            assert!(persona(flag), "{flag:#x} passes");
            assert!(persona(1 << 32 | flag), "{flag:#x} + high bits passes");
        }
    }
}
