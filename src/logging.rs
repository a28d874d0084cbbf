//! Logging: one record is one line, whatever the message holds.
//!
//! File names and message-derived text (addresses, server replies, header values) come from other
//! programs and other users: a name with a newline or a carriage return must not split a record or
//! forge a second one, and an escape sequence must not reach the admin's terminal. Every control
//! character of a record is written escaped (`\n`, `\r`, `\t`, `\x1b`, …); printable text, UTF-8
//! included, is unchanged.

use std::borrow::Cow;
use std::io::Write;

/// `s` with every control character escaped, so that it prints on one line as inert text.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// env_logger with `default_level` unless RUST_LOG says otherwise, every record on one line.
pub fn init(default_level: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format(|buf, record| {
            let style = buf.default_level_style(record.level());
            let message = record.args().to_string();
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                escape_controls(&message)
            )
        })
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_is_not() {
        for (raw, shown) in [
            ("plain.eml", "plain.eml"),
            ("caf\u{e9} \u{1F600}.eml", "caf\u{e9} \u{1F600}.eml"),
            ("a\nb", "a\\nb"),
            ("a\r[ERROR forged]", "a\\r[ERROR forged]"),
            ("tab\there", "tab\\there"),
            ("\u{1b}[31mred", "\\x1b[31mred"),
            ("nul\0", "nul\\x00"),
            ("del\u{7f}", "del\\x7f"),
            ("c1\u{85}", "c1\\x85"),
        ] {
            assert_eq!(escape_controls(raw), shown, "{raw:?}");
        }
    }
}
