//! Inputs made to hurt: nested deep, huge header lines, very many parts or fields. Each is a
//! well-formed message from alice to bob apart from its one excess.

/// The header lines every crafted message starts with (`id` makes its Message-ID).
fn head(id: &str) -> String {
    format!(
        "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nSubject: crafted {id}\n\
         Message-ID: <{id}@crafted.example.com>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMIME-Version: 1.0\n"
    )
}

/// Multiparts inside multiparts, `depth` levels with the message itself.
pub fn nested(id: &str, depth: usize) -> Vec<u8> {
    let mut m = head(id).into_bytes();
    for i in 1..depth {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\n\nhello from the bottom\n");
    for i in (1..depth).rev() {
        m.extend_from_slice(format!("--b{i}--\n").as_bytes());
    }
    m
}

/// Attached messages inside attached messages, `depth` levels with the message itself.
pub fn nested_messages(id: &str, depth: usize) -> Vec<u8> {
    let mut m = head(id).into_bytes();
    for i in 1..depth {
        m.extend_from_slice(
            format!("Content-Type: message/rfc822\n\nSubject: level {i}\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\n\nhello from the bottom\n");
    m
}

/// A header field of about `bytes` octets on one line: words (foldable) or one word (not).
pub fn long_header(id: &str, bytes: usize, words: bool) -> Vec<u8> {
    let mut m = head(id).into_bytes();
    m.extend_from_slice(b"X-Long: ");
    let unit: &[u8] = if words { b"word " } else { b"xxxxx" };
    for _ in 0..bytes / unit.len() {
        m.extend_from_slice(unit);
    }
    m.extend_from_slice(b"end\n\nbody\n");
    m
}

/// A multipart with `parts` parts of one line each.
pub fn many_parts(id: &str, parts: usize) -> Vec<u8> {
    let mut m = head(id).into_bytes();
    m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"p\"\n\n");
    for i in 0..parts {
        m.extend_from_slice(format!("--p\n\npart {i}\n").as_bytes());
    }
    m.extend_from_slice(b"--p--\n");
    m
}

/// `fields` extra header fields.
pub fn many_fields(id: &str, fields: usize) -> Vec<u8> {
    let mut m = head(id).into_bytes();
    for i in 0..fields {
        m.extend_from_slice(format!("X-Field-{i}: value {i}\n").as_bytes());
    }
    m.extend_from_slice(b"\nbody\n");
    m
}

/// A plain message of about `bytes` octets in lines of 70: what the others are measured against.
pub fn flat(id: &str, bytes: usize) -> Vec<u8> {
    let mut m = head(id).into_bytes();
    m.extend_from_slice(b"Content-Type: text/plain\n\n");
    let line = [b"abcdefghij".repeat(7), b"\n".to_vec()].concat();
    while m.len() < bytes {
        m.extend_from_slice(&line);
    }
    m
}
