//! Unit tests of parsing and the canonical form.

use mail_parser::MessageParser;

use super::encoding::{decode_qp, is_7bit_clean};
use super::*;

/// No limit but the size.
fn bytes(max_message_bytes: usize) -> Limits {
    Limits {
        max_message_bytes,
        ..Limits::NONE
    }
}

fn canon(input: &str) -> String {
    let m = parse(input.as_bytes(), &Limits::NONE).unwrap();
    String::from_utf8(m.inner).unwrap()
}

#[test]
fn seven_bit_text_is_kept_with_crlf() {
    let c = canon("From: a@x.org\nTo: b@y.org\nContent-Type: text/plain\n\nhello\nworld\n");
    assert_eq!(c, "Content-Type: text/plain\r\n\r\nhello\r\nworld\r\n");
}

#[test]
fn eight_bit_text_becomes_quoted_printable() {
    let c = canon(
        "From: a@x.org\nTo: b@y.org\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\ncaf\u{e9} au lait, merci\n",
    );
    assert_eq!(
        c,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         caf=C3=A9 au lait, merci\r\n"
    );
}

#[test]
fn missing_content_type_is_made_explicit() {
    let c = canon("From: a@x.org\nTo: b@y.org\n\nhi\n");
    assert_eq!(
        c,
        "Content-Type: text/plain; charset=us-ascii\r\n\r\nhi\r\n"
    );
}

#[test]
fn long_lines_are_wrapped_by_encoding() {
    let long = "x".repeat(3000);
    let c = canon(&format!("From: a@x.org\nTo: b@y.org\n\n{long}\n"));
    assert!(c.contains("Content-Transfer-Encoding: quoted-printable"));
    assert!(c.split("\r\n").all(|l| l.len() <= 76));
    assert_eq!(
        decode_qp(c.split_once("\r\n\r\n").unwrap().1.as_bytes()),
        format!("{long}\r\n").as_bytes()
    );
}

#[test]
fn binary_part_in_multipart_becomes_base64_and_round_trips() {
    let payload: Vec<u8> = (0x80..=0xffu8).collect();
    let mut input = b"From: a@x.org\nTo: b@y.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\npreamble\n--b1\nContent-Type: text/plain\n\nhi\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n".to_vec();
    input.extend_from_slice(&payload);
    input.extend_from_slice(b"\n--b1--\n");
    let m = parse(&input, &Limits::NONE).unwrap();
    let inner = String::from_utf8(m.inner.clone()).unwrap();
    assert!(
        inner.contains("Content-Transfer-Encoding: base64\r\n"),
        "{inner}"
    );
    let reparsed = MessageParser::new().parse(&m.inner).unwrap();
    assert_eq!(reparsed.attachment(0).unwrap().contents(), &payload[..]);
    assert!(!String::from_utf8_lossy(&m.outer_headers).contains("MIME-Version"));
}

#[test]
fn envelope_from_headers_and_bcc_is_hidden() {
    let m = parse(
        b"Return-Path: <bounce@x.org>\nFrom: A <a@x.org>\nTo: b@y.org, c@y.org\nCc: B@y.org\nBcc: d@y.org\n\nhi\n",
        &Limits::NONE,
    )
    .unwrap();
    assert_eq!(m.envelope.sender, "bounce@x.org");
    assert_eq!(m.envelope.recipients, ["b@y.org", "c@y.org", "d@y.org"]);
    assert_eq!(m.envelope.hidden, ["d@y.org"]);
    assert_eq!(m.from, "a@x.org");
    assert!(!String::from_utf8_lossy(&m.outer_headers).contains("Bcc"));
}

#[test]
fn pickup_envelope_lines_are_split_off() {
    let m = parse(
        b"x-sender: s@x.org\nx-receiver: r1@y.org\nx-receiver: <r2@y.org>\nx-job: j1\nFrom: a@x.org\nTo: r1@y.org\n\nhi\n",
        &Limits::NONE,
    )
    .unwrap();
    assert_eq!(m.envelope.sender, "s@x.org");
    assert_eq!(m.envelope.recipients, ["r1@y.org", "r2@y.org"]);
    assert_eq!(m.envelope.hidden, ["r2@y.org"]);
    assert_eq!(m.envelope.extras, [("x-job".to_string(), "j1".to_string())]);
    assert!(m.outer_headers.starts_with(b"From: a@x.org\r\n"));
}

#[test]
fn refusals_name_their_cause() {
    assert_eq!(parse(b"", &bytes(10)).unwrap_err(), ParseError::Empty);
    assert!(matches!(
        parse(b"\x00\x01\x02garbage", &bytes(100)).unwrap_err(),
        ParseError::NotAMessage(_)
    ));
    assert_eq!(
        parse(b"To: b@y.org\n\nhi", &bytes(100)).unwrap_err(),
        ParseError::NoFrom
    );
    assert_eq!(
        parse(b"From: a@x.org\n\nhi", &bytes(100)).unwrap_err(),
        ParseError::NoRecipients
    );
    assert!(matches!(
        parse(b"From: a@x.org\n\nhi", &bytes(5)).unwrap_err(),
        ParseError::TooLarge { .. }
    ));
}

#[test]
fn quoted_printable_never_starts_a_line_with_a_dash() {
    // a soft break right before "--w0" would make a delimiter of an enclosing multipart
    for pad in 60..80 {
        let text = format!("{}--w0 and From here\r\n-- sig\r\n", "x".repeat(pad));
        let mut enc = Vec::new();
        encode_qp(text.as_bytes(), &mut enc);
        for line in enc.split(|&b| b == b'\n') {
            assert!(
                !line.starts_with(b"-") && !line.starts_with(b"From "),
                "{pad}: {line:?}"
            );
        }
        assert_eq!(decode_qp(&enc), text.as_bytes());
    }
}

#[test]
fn qp_round_trip_keeps_meaning() {
    let text = "From here\r\n.\r\ntrailing space \r\n=equals\r\n\u{1F600} emoji\r\n";
    let mut enc = Vec::new();
    encode_qp(text.as_bytes(), &mut enc);
    assert!(is_7bit_clean(&enc));
    assert_eq!(decode_qp(&enc), text.as_bytes());
}

#[test]
fn date_and_message_id_are_added_when_missing() {
    let m = parse(b"From: a@x.org\nTo: b@y.org\n\nhi\n", &Limits::NONE).unwrap();
    let outer = String::from_utf8(m.outer_headers).unwrap();
    assert!(outer.contains("\r\nDate: "), "{outer}");
    assert!(
        outer.contains(&format!("\r\nMessage-ID: <{}>\r\n", m.message_id)),
        "{outer}"
    );
    assert!(m.message_id.ends_with("@x.org"));
    let kept = parse(b"From: a@x.org\nTo: b@y.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <k@x>\n\nhi\n", &bytes(999)).unwrap();
    assert_eq!(
        String::from_utf8(kept.outer_headers)
            .unwrap()
            .matches("Date:")
            .count(),
        1
    );
    assert_eq!(kept.message_id, "k@x");
}

#[test]
fn attached_message_with_8bit_body_is_made_7bit_inside() {
    let c = canon(
        "From: a@x.org\nTo: b@y.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
         Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n\
         From: c@z.org\nSubject: fwd\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\n\u{fc}ber alles gut, danke sch\u{f6}n\n--b--\n",
    );
    assert!(c.is_ascii(), "{c}");
    assert!(c.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nFrom: c@z.org\r\n"), "{c}");
    assert!(
        c.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BCber alles gut"),
        "{c}"
    );
    assert!(!c.contains("8bit"), "{c}");
}

#[test]
fn already_signed_is_detected() {
    let m = parse(
        b"From: a@x.org\nTo: b@y.org\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x\n\n--x\n\nhi\n--x--\n",
        &Limits::NONE,
    )
    .unwrap();
    assert!(m.already_sealed);
}

#[test]
fn envelope_values_that_could_inject_a_line_are_refused() {
    let body = b"From: a@x.org\nTo: b@y.org\nSubject: s\n\nhi\n";
    for (envelope, want) in [
        (
            &b"x-sender: b@x\rx-receiver: evil@evil.example\n"[..],
            "control character",
        ),
        (
            b"x-sender: a@x.org\nx-receiver: b@y.org\rx-receiver: c@evil\n",
            "control character",
        ),
        (
            b"x-sender: a@x.org\nx-receiver: b@y.org c@evil\n",
            "white space",
        ),
        (
            b"x-sender: a@x.org\nx-receiver: b@y\0.org\n",
            "control character",
        ),
        (
            b"x-sender: a@x.org\nx-receiver: <b@y.org>, c@evil\n",
            "white space",
        ),
        (b"x-sender: a@x.org\nx-receiver: nobody\n", "not an address"),
        (
            b"x-sender: a@x.org\nx-receiver: b@y.org\nx-job: spring sale\n",
            "printable ASCII",
        ),
        (
            b"x-sender: a@x.org\nx-receiver: b@y.org\nx-virtual-mta: v\rx\n",
            "control character",
        ),
        (
            b"x-sender: a@x.org\nx-receiver: b@y.org\nx-envid: \xff\n",
            "UTF-8",
        ),
    ] {
        let input = [envelope, &body[..]].concat();
        let e = parse(&input, &Limits::default()).unwrap_err();
        assert!(
            matches!(e, ParseError::BadEnvelope { .. }) && e.to_string().contains(want),
            "{:?}: {e}",
            String::from_utf8_lossy(envelope)
        );
        assert!(
            !e.to_string().contains('\r') && !e.to_string().contains('\0'),
            "{e}"
        );
    }
    // the good ones still pass, brackets and the null sender included
    let ok = [
        &b"x-sender: <>\nx-receiver: <b@y.org>\nx-job: spring-sale\nx-virtual-mta: vmta-1\n"[..],
        body,
    ]
    .concat();
    let m = parse(&ok, &Limits::default()).unwrap();
    assert_eq!(m.envelope.sender, "");
    assert_eq!(m.envelope.recipients, ["b@y.org"]);
}

#[test]
fn header_addresses_and_raw_headers_are_checked_too() {
    let e = parse(
        b"From: a@x.org\nTo: \"b\" <b c@y.org>\n\nhi\n",
        &Limits::default(),
    );
    assert!(
        matches!(
            e,
            Err(ParseError::BadAddress { .. }) | Err(ParseError::NoRecipients)
        ),
        "{e:?}"
    );
    let e = parse(
        b"From: a@x.org\nTo: b@y.org\nSubject: a\0b\n\nhi\n",
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ParseError::BadHeader { .. }) && e.to_string().contains("NUL"),
        "{e}"
    );
    // a bare CR reaches the outer header as a space, never as a line break
    let m = parse(
        b"From: a@x.org\nTo: b@y.org\nSubject: a\rX-Evil: 1\n\nhi\n",
        &Limits::default(),
    )
    .unwrap();
    let outer = String::from_utf8_lossy(&m.outer_headers);
    assert!(outer.contains("Subject: a X-Evil: 1\r\n"), "{outer:?}");
    // CRLF line ends are no bare CR
    parse(
        b"From: a@x.org\r\nTo: b@y.org\r\nSubject: a\r\n b\r\n\r\nhi\r\n",
        &Limits::default(),
    )
    .unwrap();
}

/// A message whose multiparts nest `depth` deep (the message is level 1), `hello` at the bottom.
fn nested(depth: usize) -> Vec<u8> {
    let mut m = b"From: a@x.org\nTo: b@y.org\nMIME-Version: 1.0\n".to_vec();
    for i in 1..depth {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\n\nhello\n");
    for i in (1..depth).rev() {
        m.extend_from_slice(format!("--b{i}--\n").as_bytes());
    }
    m
}

/// Attached messages inside attached messages, `depth` levels with the outer one.
fn nested_messages(depth: usize) -> Vec<u8> {
    let mut m = b"From: a@x.org\nTo: b@y.org\n".to_vec();
    for i in 1..depth {
        m.extend_from_slice(
            format!("Content-Type: message/rfc822\n\nSubject: level {i}\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\n\nhello\n");
    m
}

#[test]
fn every_limit_is_a_refusal_that_names_it() {
    let limits = Limits::default();
    let refusal = |input: &[u8]| parse(input, &limits).unwrap_err().to_string();
    assert_eq!(
        refusal(&nested(101)),
        "MIME parts nested more than 100 deep (max_mime_depth = 100)"
    );
    assert!(parse(&nested(100), &limits).is_ok());
    assert!(refusal(&nested_messages(101)).contains("max_mime_depth = 100"));
    assert!(parse(&nested_messages(100), &limits).is_ok());

    let mut parts =
        b"From: a@x.org\nTo: b@y.org\nContent-Type: multipart/mixed; boundary=b\n\n".to_vec();
    for _ in 0..10_000 {
        parts.extend_from_slice(b"--b\n\nx\n");
    }
    assert_eq!(
        refusal(&parts),
        "more than 10000 MIME parts (max_mime_parts = 10000)"
    );
    parts.truncate(parts.len() - 7); // the message and 9,999 parts
    assert!(parse(&parts, &limits).is_ok());

    let big = format!(
        "From: a@x.org\nTo: b@y.org\nX-Big: {}\n\nhi\n",
        "x".repeat(1 << 20)
    );
    assert_eq!(
        refusal(big.as_bytes()),
        format!(
            "header block of {} bytes, over max_header_bytes (1048576)",
            (1 << 20) + 35
        )
    );
    let part = format!(
        "From: a@x.org\nTo: b@y.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\nX-Big: {}\n\nx\n--b--\n",
        "x ".repeat(1 << 19)
    );
    assert_eq!(
        refusal(part.as_bytes()),
        "a MIME part's header block is over max_header_bytes (1048576)"
    );

    let to: Vec<String> = (0..10_001).map(|i| format!("r{i}@y.org")).collect();
    let many = format!("From: a@x.org\nTo: {}\n\nhi\n", to.join(",\n "));
    assert_eq!(
        refusal(many.as_bytes()),
        "more than 10000 recipients (max_recipients = 10000)"
    );
}

#[test]
fn header_lines_are_folded_or_refused_and_values_cannot_add_lines() {
    let words: Vec<String> = (0..100_000).map(|i| format!("w{i}")).collect();
    let input = format!(
        "From: a@x.org\nTo: b@y.org\nSubject: {}\n\nhi\n",
        words.join(" ")
    );
    let m = parse(input.as_bytes(), &Limits::default()).unwrap();
    assert!(
        m.outer_headers
            .split(|&b| b == b'\n')
            .all(|l| l.len() <= 999)
    );
    let e = parse(
        format!(
            "From: a@x.org\nTo: b@y.org\nSubject: {}\n\nhi\n",
            "x".repeat(5000)
        )
        .as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "header field Subject: 5001 octets without a place to fold them into lines of 998 (RFC 5322)"
    );
    // a part's header lines too, and the envelope lines a pickup file starts with
    let e = parse(
        format!(
            "From: a@x.org\nTo: b@y.org\nContent-Type: text/plain; name=\"{}\"\n\nhi\n",
            "n".repeat(2000)
        )
        .as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ParseError::Unfoldable { .. }), "{e}");
    let e = parse(
        format!(
            "x-sender: s@x.org\nx-receiver: r@y.org\nx-job: {}\nFrom: a@x.org\n\nhi\n",
            "j".repeat(1000)
        )
        .as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("longer than 998 octets"), "{e}");
    let e = parse(
        b"x-sender: s@x.org\nx-receiver: r@y.org\rx-receiver: evil@y.org\nFrom: a@x.org\n\nhi\n",
        &Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("control character"), "{e}");
    let long = format!("From: a@x.org\nTo: {}@y.org\n\nhi\n", "r".repeat(300));
    assert!(
        parse(long.as_bytes(), &Limits::default())
            .unwrap_err()
            .to_string()
            .contains("254")
    );
    // a lone CR in a header is no line break: no Bcc line appears
    let m = parse(
        b"From: a@x.org\nTo: b@y.org\nSubject: a\rBcc: c@y.org\n\nhi\n",
        &Limits::default(),
    )
    .unwrap();
    assert!(!String::from_utf8_lossy(&m.outer_headers).contains("\r\nBcc"));
}

/// The canonical form of an input nested 50,000 deep, made on a thread with the 2 MiB stack every
/// worker has: a recursive walk overflowed at about 5,000 levels.
#[test]
fn nesting_50000_deep_needs_no_deep_stack() {
    for input in [nested(50_000), nested_messages(50_000)] {
        let inner = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&input, &Limits::NONE).map(|m| m.inner))
            .unwrap()
            .join()
            .expect("no stack overflow")
            .unwrap();
        assert!(inner.ends_with(b"hello\r\n") || inner.ends_with(b"--b1--\r\n"));
        assert!(inner.windows(5).filter(|w| w == b"hello").count() == 1);
    }
}

#[test]
fn structure_follows_the_outermost_boundary() {
    // an inner part that repeats the outer boundary ends at it (RFC 2046: an outer delimiter ends
    // every part inside); the inner multipart is closed there without its own closing line
    let c = canon(
        "From: a@x.org\nTo: b@y.org\nContent-Type: multipart/mixed; boundary=o\n\n--o\n\
         Content-Type: multipart/alternative; boundary=i\n\n--i\n\nfirst\n--o\n\nsecond\n--o--\n",
    );
    assert_eq!(
        c,
        "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\
         Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nfirst\r\n--i--\r\n\r\n\
         --o\r\n\r\nsecond\r\n--o--\r\n"
    );
}
