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
//! A key lookup that fails for the moment (`temperror`: no answer in time, SERVFAIL, REFUSED, the
//! name server unreachable) makes the check temporary (`NotPassed::temporary`) when the signature
//! would count if it verified and no other signature passed: the caller tries the reply again
//! later instead of refusing it. A signature that could never count (another `d=`, `l=`, From not
//! covered) is refused whatever its lookup did.
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
/// that: a name server that never answers costs a reply about 15 s (3 × 5 s), then the check ends
/// as temporary (temperror) and the reply is tried again later.
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
    /// `from_domain`; otherwise why not (every signature's result), and whether asking again later
    /// may change the answer.
    pub fn check(&self, message: &[u8], from_domain: &str) -> Result<String, NotPassed> {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Err(NotPassed {
                why: "the message cannot be parsed for DKIM".into(),
                temporary: false,
            });
        };
        let outputs = self.runtime.block_on(
            self.auth
                .verify_dkim(Parameters::new(&parsed).with_txt_cache(&self.records)),
        );
        let seen = outputs.iter().map(|out| match out.signature() {
            Some(sig) => Seen::of(
                &Signed {
                    d: &sig.d,
                    length_limited: sig.l != 0,
                    covers_from: sig.h.iter().any(|h| h.eq_ignore_ascii_case("from")),
                },
                out.result(),
                from_domain,
            ),
            None => Seen::Refused(format!("{:?}", out.result())),
        });
        judge(seen)
    }
}

/// Why a reply has no aligned passing DKIM signature: the DKIM layer's one error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct NotPassed {
    pub why: String,
    /// a key lookup failed for the moment (`temperror`: no answer, SERVFAIL, REFUSED, the name
    /// server unreachable) for a signature that would count if it verified, and none passed: the
    /// same reply may pass once DNS answers again
    pub temporary: bool,
}

/// What of a DKIM signature decides whether it could count, whatever its result.
struct Signed<'a> {
    d: &'a str,
    length_limited: bool,
    covers_from: bool,
}

/// One signature's verdict.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// aligned and passing: the signing domain
    Pass(String),
    /// could count, but its key could not be looked up for the moment
    Temporary(String),
    Refused(String),
}

impl Seen {
    fn of(sig: &Signed<'_>, result: &DkimResult, from_domain: &str) -> Seen {
        let d = sig.d.to_ascii_lowercase();
        // what a signature must be to count, checked before its result: a signature that could
        // never count stays refused even when its lookup failed for the moment
        let misfit = if !d.eq_ignore_ascii_case(from_domain) {
            Some(format!("is not the From domain {from_domain}"))
        } else if sig.length_limited {
            Some("has l= (body length)".to_string())
        } else if !sig.covers_from {
            Some("does not cover From".to_string())
        } else {
            None
        };
        match (result, misfit) {
            (DkimResult::Pass, Some(misfit)) => Seen::Refused(format!("d={d} passes but {misfit}")),
            (DkimResult::Pass, None) => Seen::Pass(d),
            (DkimResult::TempError(_), None) => {
                Seen::Temporary(format!("d={d}: {}", result_text(result)))
            }
            (other, _) => Seen::Refused(format!("d={d}: {}", result_text(other))),
        }
    }
}

/// The verdict over all signatures: the first aligned pass; else temporary when one that could
/// count had its lookup fail for the moment; else refused.
fn judge(seen: impl IntoIterator<Item = Seen>) -> Result<String, NotPassed> {
    let mut texts = Vec::new();
    let mut temporary = false;
    for s in seen {
        match s {
            Seen::Pass(d) => return Ok(d),
            Seen::Temporary(t) => {
                temporary = true;
                texts.push(t);
            }
            Seen::Refused(t) => texts.push(t),
        }
    }
    let why = if texts.is_empty() {
        "no DKIM signature".to_string()
    } else {
        format!("no aligned passing DKIM signature ({})", texts.join("; "))
    };
    Err(NotPassed { why, temporary })
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

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::{DnsError, Error};

    const ALIGNED: Signed<'static> = Signed {
        d: "Example.org",
        length_limited: false,
        covers_from: true,
    };

    fn temperror() -> DkimResult {
        DkimResult::TempError(Error::Dns(DnsError::Resolver("request timed out".into())))
    }

    fn nxdomain() -> DkimResult {
        DkimResult::PermError(Error::Dns(DnsError::RecordNotFound(
            mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
        )))
    }

    #[test]
    fn a_failed_lookup_is_temporary_only_for_a_signature_that_could_count() {
        let from = "example.org";
        assert_eq!(
            Seen::of(&ALIGNED, &DkimResult::Pass, from),
            Seen::Pass("example.org".into())
        );
        assert!(matches!(
            Seen::of(&ALIGNED, &temperror(), from),
            Seen::Temporary(t) if t.contains("temperror") && t.contains("timed out")
        ));
        // a key that does not exist, a bad signature: refused for good
        for result in [
            nxdomain(),
            DkimResult::Fail(Error::Crypto(
                mail_auth::common::crypto::CryptoError::FailedVerification,
            )),
            DkimResult::Neutral(Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)),
            DkimResult::None,
        ] {
            assert!(
                matches!(Seen::of(&ALIGNED, &result, from), Seen::Refused(_)),
                "{result:?}"
            );
        }
        // would never count even if its key were found: refused, however the lookup went
        let misfits = [
            Signed {
                d: "example.net",
                ..ALIGNED
            },
            Signed {
                length_limited: true,
                ..ALIGNED
            },
            Signed {
                covers_from: false,
                ..ALIGNED
            },
        ];
        for sig in &misfits {
            for result in [temperror(), DkimResult::Pass] {
                assert!(
                    matches!(Seen::of(sig, &result, from), Seen::Refused(_)),
                    "d={} l={} from={}: {result:?}",
                    sig.d,
                    sig.length_limited,
                    sig.covers_from
                );
            }
        }
    }

    #[test]
    fn a_pass_wins_then_a_temporary_then_refused() {
        let t = || Seen::Temporary("d=example.org: temperror, x".into());
        let r = || Seen::Refused("d=example.org: fail, y".into());
        assert_eq!(
            judge([t(), r(), Seen::Pass("example.org".into())]),
            Ok("example.org".into())
        );
        for seen in [vec![t()], vec![r(), t()], vec![t(), r()]] {
            let e = judge(seen).unwrap_err();
            assert!(e.temporary, "{e}");
            assert!(e.why.contains("temperror, x"), "{e}");
        }
        let e = judge([r()]).unwrap_err();
        assert!(!e.temporary && e.why.contains("fail, y"), "{e}");
        let e = judge([]).unwrap_err();
        assert_eq!((e.temporary, e.why.as_str()), (false, "no DKIM signature"));
    }
}
