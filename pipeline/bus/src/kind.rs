//! Which bus: the value of `bus.url` and `--bus`, parsed once.

use std::fmt;

/// The kinds of bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusKind {
    /// In one process ([`crate::InProcBus`]).
    InProc,
    /// NATS JetStream.
    Nats,
    /// Apache Kafka (or Redpanda, or another Kafka-protocol broker).
    Kafka,
}

impl BusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::InProc => "inproc",
            BusKind::Nats => "nats",
            BusKind::Kafka => "kafka",
        }
    }
}

/// A bus address: `inproc`, `nats://host:port[,host:port...]` or
/// `kafka://host:port[,host:port...]`. Parsed from the configuration's
/// string form and written back as the same string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BusUrl {
    #[default]
    InProc,
    /// The URL as given, `nats://...`.
    Nats(String),
    /// The URL as given, `kafka://host:port[,host:port...]`.
    Kafka(String),
}

impl BusUrl {
    /// Parses `inproc`, `nats://...` or `kafka://...`; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "inproc" {
            return Ok(BusUrl::InProc);
        }
        if let Some(rest) = t.strip_prefix("nats://") {
            if rest.is_empty() || rest.split(',').any(|h| h.trim().is_empty()) {
                return Err(format!("bus.url (--bus) {s:?} names no host: nats://host:port"));
            }
            return Ok(BusUrl::Nats(t.to_owned()));
        }
        if let Some(rest) = t.strip_prefix("kafka://") {
            let rest = rest.trim_end_matches('/');
            if rest.is_empty()
                || rest
                    .split(',')
                    .any(|h| h.trim().is_empty() || h.contains(['/', '?', '@']))
            {
                return Err(format!(
                    "bus.url (--bus) {s:?}: kafka://host:port[,host:port] (brokers only, no path or credentials)"
                ));
            }
            return Ok(BusUrl::Kafka(t.to_owned()));
        }
        Err(format!(
            "bus.url (--bus) must be \"inproc\", nats://host:port or kafka://host:port, not {s:?}"
        ))
    }

    pub fn kind(&self) -> BusKind {
        match self {
            BusUrl::InProc => BusKind::InProc,
            BusUrl::Nats(_) => BusKind::Nats,
            BusUrl::Kafka(_) => BusKind::Kafka,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BusUrl::InProc => "inproc",
            BusUrl::Nats(u) | BusUrl::Kafka(u) => u,
        }
    }
}

impl TryFrom<String> for BusUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        BusUrl::parse(&s)
    }
}

impl From<BusUrl> for String {
    fn from(u: BusUrl) -> String {
        u.as_str().to_owned()
    }
}

impl fmt::Display for BusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BusUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BusUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        assert_eq!(BusUrl::parse("inproc"), Ok(BusUrl::InProc));
        let n = BusUrl::parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(n.kind(), BusKind::Nats);
        assert_eq!(n.to_string(), "nats://127.0.0.1:4222");
        assert_eq!(String::from(n.clone()), "nats://127.0.0.1:4222");
        assert_eq!(BusUrl::InProc.kind().as_str(), "inproc");
        let k = BusUrl::parse("kafka://127.0.0.1:19092,127.0.0.2:19092").unwrap();
        assert_eq!(k.kind(), BusKind::Kafka);
        assert_eq!(k.to_string(), "kafka://127.0.0.1:19092,127.0.0.2:19092");
    }

    #[test]
    fn refuses_what_it_cannot_reach() {
        for bad in [
            "kafka://",
            "kafka://a,,b",
            "kafka://u:p@x:9092",
            "redis://x:6379",
            "nats://",
            "nats://a,,b",
            "",
            "INPROC",
            "http://x",
        ] {
            let e = BusUrl::parse(bad).unwrap_err();
            assert!(e.contains("bus.url"), "{bad}: {e}");
        }
    }
}
