//! Unit tests of parsing and the canonical form.

use mail_parser::MessageParser;

use super::encoding::{decode_qp, is_7bit_clean};
use super::*;

mod refusals;

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

/// Lines of 76 characters and CRLF, the same base64 as the `base64` crate's, at every length
/// around the line and block boundaries.
#[test]
fn base64_lines_match_a_plain_encoder_at_every_boundary() {
    use base64::Engine;
    let data: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // 4,104 bytes are encoded at a time: around its multiples too
    for len in (0..=400).chain([4_103, 4_104, 4_105, 8_208, 8_209, 19_000, 19_999, 20_000]) {
        let mut out = b"prefix".to_vec();
        super::encode_base64_lines(&data[..len], &mut out);
        let plain = base64::engine::general_purpose::STANDARD.encode(&data[..len]);
        let want: Vec<u8> = plain
            .as_bytes()
            .chunks(76)
            .flat_map(|l| [l, b"\r\n"].concat())
            .collect();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out[6..], want[..], "length {len}");
    }
}
