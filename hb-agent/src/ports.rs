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
//! holds across every restart window. The ports hb itself added (not those reserved
//! before it) are kept in `state_dir/reserved-ports`, and `hb-agent uninstall` gives
//! exactly those back ([`release`]).
//!
//! Fail closed: when the reservation cannot be written and a range meets the
//! ephemeral range, the agent does not start (a node with a read-only `/proc/sys` must
//! configure ports below `ip_local_port_range`, as the defaults are).

use std::{fs, io, ops::RangeInclusive, path::Path};

pub const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
const EPHEMERAL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The ports hb added to the reservation, in `state_dir`, in the kernel's own syntax.
pub const RECORD_FILE: &str = "reserved-ports";

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
/// (those already reserved are left as they are), and what it added to the record in
/// `state_dir` (a record it cannot write is a warning: the reservation holds all the
/// same, only uninstall will not give it back).
pub fn reserve(ranges: &[RangeInclusive<u16>], state_dir: &Path) -> Result<(), PortsError> {
    let mut added = Vec::new();
    for range in ranges {
        let result = fs::read_to_string(RESERVED).and_then(|have| {
            let add = missing(&parse(&have), range);
            if add.is_empty() {
                return Ok(());
            }
            let mut all = parse(&have);
            all.extend(add.iter().cloned());
            fs::write(RESERVED, format(&all))?;
            added.extend(add);
            Ok(())
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
    if !added.is_empty() {
        let record = state_dir.join(RECORD_FILE);
        let mut all = fs::read_to_string(&record)
            .map(|t| parse(&t))
            .unwrap_or_default();
        all.extend(added);
        if let Err(error) = fs::write(&record, format(&all)) {
            tracing::warn!(path = %record.display(), %error, "cannot record the ports hb reserved; uninstall will leave them reserved");
        }
    }
    Ok(())
}

/// Gives back the ports hb reserved (the record in `state_dir`) and removes the record;
/// ports reserved by anyone else stay. Returns what was given back, in the kernel's
/// syntax (None without a record).
pub fn release(state_dir: &Path) -> io::Result<Option<String>> {
    let record = state_dir.join(RECORD_FILE);
    let ours = match fs::read_to_string(&record) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let have = parse(&fs::read_to_string(RESERVED)?);
    // A line, even when empty: the kernel clears the set on a write, and a write of
    // nothing is no write at all.
    fs::write(RESERVED, format!("{}\n", format(&without(&have, &ours))))?;
    fs::remove_file(&record)?;
    Ok(Some(format(&ours)))
}

/// The ports of `have` that are in none of `gone`, as ranges.
fn without(have: &[RangeInclusive<u16>], gone: &[RangeInclusive<u16>]) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    for range in have {
        out.extend(missing(gone, range));
    }
    out
}

/// Ranges in the kernel's syntax: sorted, merged, `a-b` or `a`, comma-separated (an
/// empty string for none).
fn format(ranges: &[RangeInclusive<u16>]) -> String {
    let mut sorted: Vec<(u16, u16)> = ranges.iter().map(|r| (*r.start(), *r.end())).collect();
    sorted.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (a, b) in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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

    #[test]
    fn what_hb_reserved_is_given_back_and_nothing_else() {
        assert_eq!(format(&[]), "");
        assert_eq!(
            format(&[5400..=5555, 80..=80, 5300..=5399, 81..=81]),
            "80-81,5300-5555"
        );
        let have = parse("80,5300-5555,15300-15555");
        assert_eq!(
            format(&without(&have, &parse("5401-5555,15300-15555"))),
            "80,5300-5400"
        );
        // A port hb recorded but someone else's range still covers elsewhere is given
        // back only where it was hb's.
        assert_eq!(format(&without(&parse("1-10"), &parse("5"))), "1-4,6-10");
        assert_eq!(format(&without(&have, &[])), "80,5300-5555,15300-15555");
    }
}
