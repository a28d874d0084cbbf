//! Refusals of the parser: envelope values and header lines that could add a line, and every
//! input limit (depth, parts, header and message size, recipients), each named in its reason; a
//! depth of 50,000 parsed without a deep stack.

use super::super::*;

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
