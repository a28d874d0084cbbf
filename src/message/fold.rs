//! Header fields on output: CRLF line ends, and no line over 998 octets (RFC 5322 §2.1.1).
//!
//! A field is written as it came, folding included, as long as its lines fit. A line over 998 octets
//! is folded before white space that follows a word (only the line break is added, so unfolding gives
//! back the same value), into lines of about 78 octets (§2.2.3 asks for 78). A line that has no such
//! place within 998 octets cannot be made valid without changing the value: the input is refused.
//!
//! A CR that ends no line is no line break on input (lines end at LF), so it must not become one on
//! output: it is written as a space. Several CRs before an LF (a doubly converted file) end the line
//! like one.

use super::{Field, MAX_LINE, ParseError, limits::shown};

/// Where folding aims when it has to fold (RFC 5322's recommended line length).
const SOFT_LINE: usize = 78;

/// Appends one header field, each of its lines ending in CRLF, folded where a line is too long.
pub fn write_field(out: &mut Vec<u8>, field: &Field) -> Result<(), ParseError> {
    let mut rest = field.raw;
    loop {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let mut line = line;
        while let [head @ .., b'\r'] = line {
            line = head;
        }
        write_line(out, line, field.name)?;
        match next {
            Some(n) => rest = n,
            None => return Ok(()),
        }
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// One physical line of a field (without its line end), folded if over 998 octets.
fn write_line(out: &mut Vec<u8>, line: &[u8], name: &str) -> Result<(), ParseError> {
    let push = |out: &mut Vec<u8>, part: &[u8]| {
        let at = out.len();
        out.extend_from_slice(part);
        for b in &mut out[at..] {
            if *b == b'\r' {
                *b = b' ';
            }
        }
        out.extend_from_slice(b"\r\n");
    };
    if line.len() <= MAX_LINE {
        push(out, line);
        return Ok(());
    }
    // places to fold: white space right after a word, with a word still to come on the new line
    let last_word = line.iter().rposition(|&b| !is_wsp(b)).unwrap_or(0);
    let breaks: Vec<usize> = (1..last_word)
        .filter(|&i| is_wsp(line[i]) && !is_wsp(line[i - 1]))
        .collect();
    let mut start = 0;
    let mut next = 0; // index into `breaks` of the first one after `start`
    // once a line must be folded, all of it is, as near 78 octets a line as its words allow
    while line.len() - start > SOFT_LINE {
        while next < breaks.len() && breaks[next] <= start {
            next += 1;
        }
        // the last place within the soft width, else the first within the hard one
        let mut pick = None;
        let mut i = next;
        while i < breaks.len() && breaks[i] - start <= SOFT_LINE {
            pick = Some(breaks[i]);
            i += 1;
        }
        if pick.is_none() && line.len() - start <= MAX_LINE {
            break;
        }
        let pick = pick.or_else(|| breaks.get(next).copied().filter(|&b| b - start <= MAX_LINE));
        let Some(at) = pick else {
            let len = breaks.get(next).copied().unwrap_or(line.len()) - start;
            return Err(ParseError::Unfoldable {
                name: shown(name),
                len,
            });
        };
        push(out, &line[start..at]);
        start = at;
    }
    push(out, &line[start..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(raw: &[u8]) -> Result<Vec<u8>, ParseError> {
        let mut out = Vec::new();
        let colon = raw.iter().position(|&b| b == b':').unwrap();
        let name = std::str::from_utf8(&raw[..colon]).unwrap();
        write_field(&mut out, &Field { name, raw }).map(|()| out)
    }

    fn unfold(folded: &[u8]) -> Vec<u8> {
        let s = folded.strip_suffix(b"\r\n").unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s[i..].starts_with(b"\r\n") {
                i += 2;
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn fields_that_fit_are_kept_as_written() {
        for raw in [
            &b"Subject: hello"[..],
            b"Subject: folded\r\n  as written",
            b"Subject: lf\n\tfolded",
        ] {
            let out = fold(raw).unwrap();
            let mut expected = Vec::new();
            crate::message::push_crlf(&mut expected, raw);
            expected.extend_from_slice(b"\r\n");
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn a_long_line_is_folded_at_white_space_and_unfolds_to_the_same_value() {
        let words: Vec<String> = (0..20_000).map(|i| format!("w{i}")).collect();
        let raw = format!("Subject: {}", words.join(" "));
        let out = fold(raw.as_bytes()).unwrap();
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert!(lines.len() > 1000, "{} lines", lines.len());
        assert_eq!(lines.last(), Some(&&b""[..]));
        for line in &lines[..lines.len() - 1] {
            assert!(
                line.ends_with(b"\r") && line.len() - 1 <= SOFT_LINE,
                "{line:?}"
            );
            assert!(
                line.iter().any(|&b| !is_wsp(b) && b != b'\r'),
                "no blank line"
            );
        }
        assert_eq!(unfold(&out), raw.as_bytes());
    }

    #[test]
    fn long_words_fold_within_998_or_are_refused() {
        // a 900-octet word: no place within 78, the next one within 998
        let raw = format!("Subject: {} {} end", "a".repeat(900), "b".repeat(900));
        let out = fold(raw.as_bytes()).unwrap();
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1));
        assert_eq!(unfold(&out), raw.as_bytes());
        // one word of 5,000 octets: refused, naming the field and the length
        let raw = format!("Subject: x {} y", "a".repeat(5000));
        let e = fold(raw.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            ParseError::Unfoldable {
                name: "Subject".into(),
                len: 5001
            }
        );
        // trailing white space gives no place to fold
        let raw = format!("Subject: {}{}", "a".repeat(990), " ".repeat(100));
        assert!(fold(raw.as_bytes()).is_err());
    }

    #[test]
    fn a_lone_cr_never_becomes_a_line_break() {
        let out = fold(b"Subject: a\rBcc: evil@example.com\r\r\n next").unwrap();
        assert_eq!(out, b"Subject: a Bcc: evil@example.com\r\n next\r\n");
    }
}
