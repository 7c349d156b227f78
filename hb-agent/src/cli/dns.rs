//! `hb-agent dns lookup`: ask the running agent's resolver what a sandbox of a policy
//! would get for a name. This is a real query on the policy's port: an allowed answer
//! is also learned into that policy's allow map, exactly as for a sandbox.

use std::{net::UdpSocket, time::Duration};

use anyhow::{Context as _, bail};
use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RData, RecordType},
};
use serde_json::json;

use crate::{config::Config, maps::Maps};

pub fn lookup(config: &Config, policy: &str, host: &str, json: bool) -> anyhow::Result<()> {
    if !config.dns.redirect {
        bail!("dns.redirect is off in this config: the agent runs no resolver");
    }
    let maps = Maps::open(&config.agent.bpffs_dir)?;
    let loaded = maps.loaded_policies()?;
    let Some(p) = loaded.iter().find(|p| p.name == policy) else {
        bail!(
            "policy \"{policy}\" is not loaded; loaded policies: {}",
            loaded
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let listen = config.dns_listen();
    let server = (*listen.ip(), listen.port() + p.id as u16);
    let name = Name::from_ascii(format!("{}.", host.trim_end_matches('.')))
        .with_context(|| format!("\"{host}\" is not a DNS name"))?;
    let sock = UdpSocket::bind("127.0.0.1:0").context("binding a UDP socket")?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut rows = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name.clone(), qtype));
        sock.send_to(&m.to_vec()?, server)
            .with_context(|| format!("sending to the resolver at {}:{}", server.0, server.1))?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).with_context(|| {
            format!(
                "no answer from the resolver at {}:{} (is hb-agent running?)",
                server.0, server.1
            )
        })?;
        let reply = Message::from_vec(&buf[..n]).context("the resolver's answer does not parse")?;
        let addrs: Vec<String> = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                RData::CNAME(c) => Some(format!("CNAME {}", c.0)),
                _ => None,
            })
            .collect();
        let ttl = reply.answers.iter().map(|r| r.ttl).min();
        rows.push(json!({
            "policy": policy,
            "name": host,
            "type": qtype.to_string(),
            "rcode": reply.metadata.response_code.to_string(),
            "answers": addrs,
            "ttl": ttl,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            let answers: Vec<&str> = r["answers"].as_array().map_or(Vec::new(), |a| {
                a.iter().filter_map(|v| v.as_str()).collect()
            });
            println!(
                "{:<5} {:<9} {} {}",
                r["type"].as_str().unwrap_or("?"),
                r["rcode"].as_str().unwrap_or("?"),
                if answers.is_empty() {
                    "-".to_owned()
                } else {
                    answers.join(" ")
                },
                r["ttl"]
                    .as_u64()
                    .map(|t| format!("(ttl {t}s)"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
