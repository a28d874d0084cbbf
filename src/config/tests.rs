//! Reading, resolving and refusing configuration files; the README documents every key.

use super::*;

#[test]
fn relative_paths_follow_the_config_file() {
    let c = Config::from_toml(
        "keys = \"k\"\nca = \"/abs/ca.pem\"\n",
        Some(Path::new("/etc/x/c.toml")),
    )
    .unwrap();
    assert_eq!(c.keys, Path::new("/etc/x/k"));
    assert_eq!(c.certs, Path::new("/etc/x/certs"));
    assert_eq!(c.ca.as_deref(), Some(Path::new("/abs/ca.pem")));
    assert!(c.seal.sign && c.seal.encrypt);
}

#[test]
fn limits_have_defaults_and_ranges() {
    let c = Config::from_toml("", None).unwrap();
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.max_mime_depth, 100);
    let c = Config::from_toml("max_mime_depth = 20\nmax_recipients = 50\n", None).unwrap();
    assert_eq!((c.limits.max_mime_depth, c.limits.max_recipients), (20, 50));
    for (text, named) in [
        (
            "max_mime_depth = 0",
            "max_mime_depth = 0: must be from 1 to 1000",
        ),
        ("max_mime_depth = 5000", "max_mime_depth = 5000"),
        (
            "max_header_bytes = 100",
            "max_header_bytes = 100: must be from 1024",
        ),
        ("max_mime_parts = 0", "max_mime_parts"),
        ("max_recipients = 0", "max_recipients"),
        ("max_message_bytes = 0", "max_message_bytes = 0"),
    ] {
        let e = Config::from_toml(text, Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains(named), "{text}: {e}");
    }
}

#[test]
fn reuse_inodes_is_auto_always_or_never() {
    use crate::deliver::pickup::recycle::Reuse;
    let parse = |t: &str| Config::from_toml(t, Some(Path::new("c.toml")));
    assert_eq!(parse("").unwrap().reuse_inodes, Reuse::Auto);
    for (text, want) in [
        ("reuse_inodes = \"auto\"", Reuse::Auto),
        ("reuse_inodes = \"always\"", Reuse::Always),
        ("reuse_inodes = \"never\"", Reuse::Never),
    ] {
        assert_eq!(parse(text).unwrap().reuse_inodes, want, "{text}");
    }
    for bad in ["reuse_inodes = true", "reuse_inodes = \"yes\""] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.starts_with("c.toml: line 1: "), "{bad}: {e}");
    }
}

#[test]
fn sync_is_auto_file_or_filesystem() {
    use crate::deliver::pickup::SyncStrategy;
    let parse = |t: &str| Config::from_toml(t, Some(Path::new("c.toml")));
    assert_eq!(parse("").unwrap().sync, SyncStrategy::Auto);
    for (text, want) in [
        ("sync = \"auto\"", SyncStrategy::Auto),
        ("sync = \"file\"", SyncStrategy::File),
        ("sync = \"filesystem\"", SyncStrategy::Filesystem),
    ] {
        assert_eq!(parse(text).unwrap().sync, want, "{text}");
    }
    for bad in [
        "sync = \"syncfs\"",
        "sync = \"File\"",
        "sync = true",
        "sync = \"\"",
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(
            e.starts_with("c.toml: line 1: ")
                && (e.contains("expected one of `auto`, `file`, `filesystem`")
                    || e.contains("wanted string")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn unknown_keys_are_named() {
    let e = Config::from_toml("kyes = \"k\"\n", Some(Path::new("c.toml")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("kyes"), "{e}");
    let e = Config::from_toml("[seal]\ncipher = \"des\"\n", Some(Path::new("c.toml")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("des"), "{e}");
}

#[test]
fn a_parse_error_names_the_line_and_never_quotes_a_secret() {
    let secret = "s3cr3t-Value";
    for text in [
        format!("[smtp]\nhost = \"h\"\npassword = \"{secret}\n"), // unterminated
        format!("[smtp]\npassword = \"{secret}\nport = 25\n"),
        format!("[smtp]\npassword = {secret}\n"), // unquoted
        "[smtp]\npassword = 123456\n".to_string(), // wrong type: serde quotes the value
        format!("[smtp]\npassword = \"\"\"{secret}\n"),
    ] {
        let e = Config::from_toml(&text, Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains(secret) && !e.contains("123456") && !e.contains("password ="),
            "{text:?} gave {e}"
        );
        assert!(e.starts_with("c.toml: line "), "{e}");
    }
    let e = Config::from_toml("workers = \"many\"\n", Some(Path::new("c.toml")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
}

#[test]
fn numbers_out_of_range_name_their_key() {
    for (text, key) in [
        ("workers = 100000", "workers"),
        ("workers = 9223372036854775807", "workers"),
        ("workers = 0", "workers"),
        ("rescan_seconds = 9223372036854775807", "rescan_seconds"),
        ("settle_ms = 9223372036854775807", "settle_ms"),
        ("retry_max_seconds = 0", "retry_max_seconds"),
        ("pickup_max_backlog = 0", "pickup_max_backlog"),
        ("max_recipients_per_file = 0", "max_recipients_per_file"),
        ("max_message_bytes = 0", "max_message_bytes"),
        ("[smtp]\ntimeout = 0", "[smtp] timeout"),
        ("[smtp]\ntimeout = 9223372036854775807", "[smtp] timeout"),
        (
            "[smtp]\nmax_messages_per_connection = 0",
            "max_messages_per_connection",
        ),
    ] {
        let e = Config::from_toml(text, Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("out of range"), "{text}: {e}");
    }
    for (key, lo, hi) in RANGES {
        for v in [lo, hi] {
            let v = v.min(i64::MAX as u64);
            let text = match (key.strip_prefix("[smtp] "), key.strip_prefix("[api] ")) {
                (Some(k), _) => format!("[smtp]\n{k} = {v}"),
                (_, Some(k)) => format!("[api]\n{k} = {v}"),
                _ => format!("{key} = {v}"),
            };
            assert!(
                Config::from_toml(&text, Some(Path::new("c.toml"))).is_ok(),
                "{text}"
            );
        }
    }
}

mod reference {
    use super::*;

    /// The keys serde accepts in a section, read from its "unknown field" error.
    fn accepted(section: &str) -> Vec<String> {
        let text = if section.is_empty() {
            "not_a_key = 1\n".to_string()
        } else {
            format!("[{section}]\nnot_a_key = 1\n")
        };
        let err = Config::from_toml(&text, Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        let list = err
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("{err}"));
        list.split(',')
            .map(|k| {
                k.trim()
                    .trim_matches(|c| c == '`' || c == '.' || c == '\n')
                    .to_string()
            })
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// Every key of the configuration is documented in the README's table, with its section.
    #[test]
    fn every_config_key_is_in_the_readme() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let mut checked = 0;
        for section in ["", "seal", "smtp", "api"] {
            for key in accepted(section) {
                if section.is_empty() && (key == "seal" || key == "smtp" || key == "api") {
                    continue;
                }
                let row = if section.is_empty() {
                    format!("| `{key}` |")
                } else {
                    format!("| `[{section}] {key}` |")
                };
                assert!(
                    readme.contains(&row),
                    "README.md lacks a config reference row {row}"
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} keys checked");
    }
}

#[test]
fn harvest_dns_lists_name_servers() {
    let parse = |t: &str| Config::from_toml(t, Some(Path::new("c.toml")));
    assert!(parse("").unwrap().harvest_dns.is_empty());
    let c = parse("harvest_dns = [\"127.0.0.1\", \"127.0.0.1:5353\", \"::1\", \"[::1]:5300\"]\n")
        .unwrap();
    let shown: Vec<String> = c.harvest_dns.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        shown,
        ["127.0.0.1:53", "127.0.0.1:5353", "[::1]:53", "[::1]:5300"]
    );
    for (text, named) in [
        (
            "harvest_dns = []",
            "c.toml: harvest_dns = []: list name servers",
        ),
        (
            "harvest_dns = [\"dns.example.org\"]",
            "c.toml: harvest_dns: \"dns.example.org\" is not an IP address",
        ),
        (
            "harvest_dns = [\"127.0.0.1:0\"]",
            "harvest_dns: \"127.0.0.1:0\": port 0",
        ),
        (
            "harvest_dns = [\"127.0.0.1:99999\"]",
            "harvest_dns: \"127.0.0.1:99999\"",
        ),
        (
            "harvest_dns = [\"localhost:53\"]",
            "\"localhost:53\" is not",
        ),
        // a value cannot start a line of its own in the error
        (
            "harvest_dns = [\"1.2.3.4\\nerror: forged\"]",
            "harvest_dns: \"1.2.3.4\\nerror: forged\" is not",
        ),
        ("harvest_dns = \"127.0.0.1\"", "c.toml: line 1: "),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(named), "{text}: {e}");
        assert_eq!(e.lines().count(), 1, "{text}: {e}");
    }
}
