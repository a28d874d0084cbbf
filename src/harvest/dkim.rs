//! `harvest_require_dkim`: the reply must carry a passing DKIM signature of the From domain.
//!
//! An S/MIME signature proves that the holder of a certificate signed the bytes; it does not prove
//! that this holder sent the reply to us. DKIM ties the reply to its From domain's mail servers, so
//! a party that holds some signed message of someone else cannot replay it at us as "their reply"
//! unless that domain's servers signed it. The signature must verify, name the From domain itself
//! as `d=` (strict alignment: no public-suffix list is consulted), cover the From field and have
//! no `l=` body length limit (content could be appended past it).
//!
//! mail-auth's verifier is async: its DNS lookups go through hickory on tokio. The rest of
//! smime-pickup is synchronous threads, so a `Dkim` owns one current-thread tokio runtime, used
//! only to run `verify_dkim` to completion (`block_on`) on the calling thread; no task outlives a
//! check and nothing else runs on it.
//!
//! Where the key records come from: the system's resolver (`/etc/resolv.conf`), or the name
//! servers of `harvest_dns` (`Dkim::name_servers`: a local validating resolver, say; asked over UDP,
//! and TCP for answers too long for UDP, with no search domains and nothing read from the system).
//! Tests either preload the records (`Dkim::preloaded`: the resolver has no name server at all) or
//! run a DNS server on 127.0.0.1 and name it in `harvest_dns`, so a test never asks the internet.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, Txt};

/// How long the resolver of `harvest_dns` waits for one answer, and how often it asks again after
/// that: a name server that never answers costs a reply about 15 s (3 × 5 s), then the reply is
/// refused (temperror).
pub const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
pub const LOOKUP_RETRIES: usize = 2;

/// TXT records known in advance (tests), or none (every lookup goes to DNS).
struct Records(HashMap<Box<str>, Txt>);

impl mail_auth::ResolverCache<Box<str>, Txt> for Records {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get(name).cloned()
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    // answers are not kept: one reply is checked once
    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

/// A DKIM verifier: resolver, runtime and the preloaded records.
pub struct Dkim {
    runtime: tokio::runtime::Runtime,
    auth: MessageAuthenticator,
    records: Records,
}

impl Dkim {
    /// The system's resolver (`/etc/resolv.conf`).
    pub fn system() -> Result<Dkim, String> {
        let runtime = runtime()?;
        let auth = {
            let _in = runtime.enter();
            MessageAuthenticator::new_system_conf().map_err(|e| format!("DNS resolver: {e}"))?
        };
        Ok(Dkim {
            runtime,
            auth,
            records: Records(HashMap::new()),
        })
    }

    /// These name servers only (`harvest_dns`), each over UDP and TCP on its port.
    pub fn name_servers(servers: &[SocketAddr]) -> Result<Dkim, String> {
        let config = ResolverConfig::from_name_servers(
            servers
                .iter()
                .map(|s| {
                    let on_port = |mut c: ConnectionConfig| {
                        c.port = s.port();
                        c
                    };
                    NameServerConfig::new(
                        s.ip(),
                        true,
                        vec![
                            on_port(ConnectionConfig::udp()),
                            on_port(ConnectionConfig::tcp()),
                        ],
                    )
                })
                .collect(),
        );
        let runtime = runtime()?;
        let auth = {
            let _in = runtime.enter();
            let mut opts = ResolverOpts::default();
            opts.timeout = LOOKUP_TIMEOUT;
            opts.attempts = LOOKUP_RETRIES;
            MessageAuthenticator::new(config, opts).map_err(|e| format!("DNS resolver: {e}"))?
        };
        Ok(Dkim {
            runtime,
            auth,
            records: Records(HashMap::new()),
        })
    }

    /// No name server at all: only `records` (name such as `sel._domainkey.example.org`, TXT
    /// value `v=DKIM1; k=rsa; p=…`) are known.
    pub fn preloaded(records: &[(&str, &str)]) -> Result<Dkim, String> {
        let runtime = runtime()?;
        let auth = {
            let _in = runtime.enter();
            MessageAuthenticator::new(
                ResolverConfig::from_name_servers(Vec::new()),
                ResolverOpts::default(),
            )
            .map_err(|e| format!("DNS resolver: {e}"))?
        };
        let mut map = HashMap::new();
        for (name, value) in records {
            let key = DomainKey::parse(value.as_bytes())
                .map_err(|e| format!("{name}: not a DKIM key record ({e})"))?;
            let fqdn = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
            map.insert(fqdn.into_boxed_str(), Txt::from(key));
        }
        Ok(Dkim {
            runtime,
            auth,
            records: Records(map),
        })
    }

    /// Ok with the signing domain when `message` has a passing DKIM signature aligned with
    /// `from_domain`; otherwise why not (every signature's result).
    pub fn check(&self, message: &[u8], from_domain: &str) -> Result<String, String> {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Err("the message cannot be parsed for DKIM".into());
        };
        let outputs = self.runtime.block_on(
            self.auth
                .verify_dkim(Parameters::new(&parsed).with_txt_cache(&self.records)),
        );
        let mut seen = Vec::new();
        for out in &outputs {
            let Some(sig) = out.signature() else {
                seen.push(format!("{:?}", out.result()));
                continue;
            };
            let d = sig.d.to_ascii_lowercase();
            let verdict = match out.result() {
                DkimResult::Pass if !d.eq_ignore_ascii_case(from_domain) => {
                    format!("d={d} passes but is not the From domain {from_domain}")
                }
                DkimResult::Pass if sig.l != 0 => format!("d={d} passes but has l= (body length)"),
                DkimResult::Pass if !sig.h.iter().any(|h| h.eq_ignore_ascii_case("from")) => {
                    format!("d={d} passes but does not cover From")
                }
                DkimResult::Pass => return Ok(d),
                other => format!("d={d}: {}", result_text(other)),
            };
            seen.push(verdict);
        }
        if seen.is_empty() {
            Err("no DKIM signature".into())
        } else {
            Err(format!(
                "no aligned passing DKIM signature ({})",
                seen.join("; ")
            ))
        }
    }
}

fn result_text(r: &DkimResult) -> String {
    match r {
        DkimResult::Pass => "pass".into(),
        DkimResult::Neutral(e) => format!("neutral, {e}"),
        DkimResult::Fail(e) => format!("fail, {e}"),
        DkimResult::PermError(e) => format!("permerror, {e}"),
        DkimResult::TempError(e) => format!("temperror, {e}"),
        DkimResult::None => "none".into(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("DNS runtime: {e}"))
}
