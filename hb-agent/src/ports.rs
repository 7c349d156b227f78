//! The agent's per-policy ports (the resolver's at `dns.listen`'s port + policy id, the
//! guard's at `guard.listen`'s), kept out of the kernel's ephemeral range.
//!
//! The kernel redirects a sandbox's DNS and guarded connects to those ports whether or
//! not the agent listens: while it is down or restarting, whoever holds one is handed
//! another policy's lookups or guarded connections. The bind hook refuses an enrolled
//! cgroup's bind *to* one of them, but a socket also gets a port without naming one
//! (`bind` to port 0, `listen`/`connect`/`sendto` on an unbound socket), picked by the
//! kernel from `ip_local_port_range`, and no bind hook sees which. So at start the agent
//! adds its ranges to `net.ipv4.ip_local_reserved_ports` (IPv6 sockets too), which the
//! kernel never picks an ephemeral port from; the reservation outlives the agent, so it
//! holds across every restart window.
//!
//! Fail closed: when the reservation cannot be written and a range meets the
//! ephemeral range, the agent does not start (a node with a read-only `/proc/sys` must
//! configure ports below `ip_local_port_range`, as the defaults are).

use std::{fs, io, ops::RangeInclusive};

const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
const EPHEMERAL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    #[error(
        "cannot reserve ports {range:?} (the agent's per-policy ports) in {RESERVED}, and they meet the \
         ephemeral range {ephemeral:?} ({EPHEMERAL}): a sandbox could be given one of them by the kernel \
         while the agent is down; configure dns.listen / guard.listen below the ephemeral range"
    )]
    Unreserved {
        range: RangeInclusive<u16>,
        ephemeral: RangeInclusive<u16>,
        #[source]
        source: io::Error,
    },
}

/// Parses `ip_local_reserved_ports` (`""`, or `a,b-c,…`).
fn parse(text: &str) -> Vec<RangeInclusive<u16>> {
    text.trim()
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .filter_map(|p| {
            let p = p.trim();
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            Some(a.trim().parse().ok()?..=b.trim().parse().ok()?)
        })
        .collect()
}

/// The ports of `want` not covered by `have`, as ranges.
fn missing(have: &[RangeInclusive<u16>], want: &RangeInclusive<u16>) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    let mut start: Option<u16> = None;
    for port in want.clone() {
        let covered = have.iter().any(|r| r.contains(&port));
        match (covered, start) {
            (false, None) => start = Some(port),
            (true, Some(s)) => {
                out.push(s..=port - 1);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..=*want.end());
    }
    out
}

fn ephemeral() -> Option<RangeInclusive<u16>> {
    let text = fs::read_to_string(EPHEMERAL).ok()?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    Some(it.next()?.ok()?..=it.next()?.ok()?)
}

fn overlaps(a: &RangeInclusive<u16>, b: &RangeInclusive<u16>) -> bool {
    a.start() <= b.end() && b.start() <= a.end()
}

/// Adds each of `ranges` to the calling thread's network namespace's reserved ports
/// (those already reserved are left as they are).
pub fn reserve(ranges: &[RangeInclusive<u16>]) -> Result<(), PortsError> {
    for range in ranges {
        let result = fs::read_to_string(RESERVED).and_then(|have| {
            let add = missing(&parse(&have), range);
            if add.is_empty() {
                return Ok(());
            }
            let mut text = have.trim().to_owned();
            for r in add {
                if !text.is_empty() {
                    text.push(',');
                }
                text.push_str(&format!("{}-{}", r.start(), r.end()));
            }
            fs::write(RESERVED, text)
        });
        match result {
            Ok(()) => {
                tracing::debug!(
                    ?range,
                    "ports reserved (no ephemeral port is picked from them)"
                );
            }
            Err(source) => match ephemeral() {
                Some(ephemeral) if !overlaps(range, &ephemeral) => {
                    tracing::warn!(
                        ?range,
                        error = %source,
                        "cannot reserve the agent's ports; they lie outside the ephemeral range today"
                    );
                }
                ephemeral => {
                    return Err(PortsError::Unreserved {
                        range: range.clone(),
                        ephemeral: ephemeral.unwrap_or(0..=u16::MAX),
                        source,
                    });
                }
            },
        }
    }
    Ok(())
}

/// The per-policy port range starting at `base`.
pub fn policy_ports(base: u16) -> RangeInclusive<u16> {
    let last = u32::from(base) + hb_common::limits::POLICIES - 1;
    base..=u16::try_from(last).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_parse_and_what_is_missing_is_added() {
        assert!(parse("").is_empty());
        assert!(parse("\n").is_empty());
        let have = parse("80,5300-5400,15555\n");
        assert_eq!(have, vec![80..=80, 5300..=5400, 15555..=15555]);
        assert_eq!(missing(&have, &(5300..=5555)), vec![5401..=5555]);
        assert_eq!(
            missing(&have, &(5300..=5400)),
            Vec::<RangeInclusive<u16>>::new()
        );
        assert_eq!(missing(&have, &(15300..=15555)), vec![15300..=15554]);
        assert_eq!(missing(&[], &(53..=308)), vec![53..=308]);
        assert_eq!(policy_ports(15300), 15300..=15555);
    }
}
