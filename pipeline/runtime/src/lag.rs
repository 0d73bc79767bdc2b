//! `auroraq lag`: what each consumer group has yet to settle, per partition: messages stored and
//! not yet delivered (`pending`) and delivered but not yet acked (`unacked`). The operators'
//! signal for scaling a group; the same numbers are the `auroraq_bus_pending_messages` and
//! `auroraq_bus_unacked_messages` gauges of `/metrics`.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use auroraq_bus::Bus;
use serde::Serialize;

/// One partition of a group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: u32,
    pub pending: u64,
    pub unacked: u64,
}

/// One consumer group: its totals and partitions.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub pending: u64,
    pub unacked: u64,
    pub partitions: Vec<PartitionLag>,
}

/// The lag of every group on `bus` (or of `group` only), groups by name, partitions by number.
pub async fn lag(bus: &dyn Bus, group: Option<&str>) -> Result<Vec<GroupLag>> {
    let parts = bus
        .partition_backlogs()
        .await
        .with_context(|| format!("reading consumer backlogs from the {} bus", bus.kind()))?;
    let mut groups: Vec<GroupLag> = Vec::new();
    for p in parts {
        let at = match groups.iter().position(|g| g.group == p.group) {
            Some(i) => i,
            None => {
                groups.push(GroupLag {
                    group: p.group.clone(),
                    pending: 0,
                    unacked: 0,
                    partitions: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        g.pending += p.backlog.pending;
        g.unacked += p.backlog.unacked;
        g.partitions.push(PartitionLag {
            partition: p.partition,
            pending: p.backlog.pending,
            unacked: p.backlog.unacked,
        });
    }
    for g in &mut groups {
        g.partitions.sort_by_key(|p| p.partition);
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    if let Some(want) = group {
        let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
        if !names.contains(&want) {
            bail!(
                "no consumer group {want:?} on this bus; groups: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
        }
        groups.retain(|g| g.group == want);
    }
    Ok(groups)
}

/// A table: a line per group and partition, then the group's total.
pub fn table(groups: &[GroupLag]) -> String {
    let mut out = String::new();
    if groups.is_empty() {
        out.push_str("no consumer groups on this bus\n");
        return out;
    }
    let w = groups.iter().map(|g| g.group.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(
        out,
        "{:<w$}  {:>9}  {:>10}  {:>10}",
        "GROUP", "PARTITION", "PENDING", "UNACKED"
    );
    for g in groups {
        for p in &g.partitions {
            let _ = writeln!(
                out,
                "{:<w$}  {:>9}  {:>10}  {:>10}",
                g.group, p.partition, p.pending, p.unacked
            );
        }
        let _ = writeln!(
            out,
            "{:<w$}  {:>9}  {:>10}  {:>10}",
            g.group, "all", g.pending, g.unacked
        );
    }
    out
}

/// Prints the lag (a table, or one JSON object per print with `json`); with `every`, again at
/// that interval until `stop`, so that an operator sees a backlog drain.
pub async fn print(
    bus: &dyn Bus,
    group: Option<&str>,
    json: bool,
    every: Option<std::time::Duration>,
    stop: auroraq_util::CancellationToken,
) -> Result<()> {
    loop {
        let groups = lag(bus, group).await?;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "bus": bus.kind().to_string(),
                    "at": auroraq_util::time::rfc3339(auroraq_schemas::now_micros()),
                    "groups": groups,
                })
            );
        } else {
            if every.is_some() {
                println!("{}", auroraq_util::time::rfc3339(auroraq_schemas::now_micros()));
            }
            print!("{}", table(&groups));
        }
        let Some(every) = every else { return Ok(()) };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auroraq_bus::{inproc::InProcBus, InProcConfig, OutMessage, SubscribeOptions};

    #[tokio::test]
    async fn groups_and_partitions_of_the_in_process_bus() {
        let bus = InProcBus::new(InProcConfig {
            partitions: 4,
            ..InProcConfig::default()
        });
        let mut sub = bus
            .subscribe(SubscribeOptions::new("lagtest", "news.>"))
            .await
            .unwrap();
        let msgs = (0..20)
            .map(|i| {
                OutMessage::new(
                    "news.articles.x",
                    Some(format!("k{i}")),
                    format!("id{i}"),
                    bytes::Bytes::from_static(b"x"),
                )
            })
            .collect();
        bus.publish(msgs).await.unwrap();
        for _ in 0..5 {
            let d = sub.next().await.unwrap().unwrap();
            d.ack().await.unwrap();
        }
        let g = lag(&bus, None).await.unwrap();
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(g[0].group, "lagtest");
        assert_eq!(g[0].pending + g[0].unacked, 15, "{g:?}");
        assert_eq!(
            g[0].partitions.iter().map(|p| p.pending + p.unacked).sum::<u64>(),
            15
        );
        assert!(g[0]
            .partitions
            .windows(2)
            .all(|w| w[0].partition < w[1].partition));
        let t = table(&g);
        assert!(t.starts_with("GROUP"), "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("lagtest") && l.contains(" all ")),
            "{t}"
        );
        let e = format!("{:#}", lag(&bus, Some("nope")).await.unwrap_err());
        assert!(e.contains("\"nope\"") && e.contains("lagtest"), "{e}");
        assert_eq!(lag(&bus, Some("lagtest")).await.unwrap(), g);
    }
}
