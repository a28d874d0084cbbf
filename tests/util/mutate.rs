//! The fuzz test's generator: a seeded random source and the mutations it applies to inputs.

use std::path::PathBuf;

/// splitmix64: small, fast, and the same sequence everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Lines worth splicing in: delimiters of the corpus's boundaries, MIME headers, odd bytes.
pub fn dictionary(corpus: &[(PathBuf, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> = [
        &b"Content-Type: multipart/mixed; boundary=\"z\"\n\n--z\n"[..],
        b"--z--\n",
        b"Content-Type: message/rfc822\n\n",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
        b"Content-Transfer-Encoding: base64\n",
        b"Content-Transfer-Encoding: quoted-printable\n",
        b"Content-Type: multipart/alternative; boundary*0=\"a\"; boundary*1=\"b\"\n",
        b"\n",
        b"\r",
        b"\r\r\n",
        b"\0",
        b"\xff\xfe\xc3\xa9",
        b" folded continuation\n",
        b"\tx\n",
        b"Bcc: hidden@example.com\n",
        b"To: bob@example.com, erin@example.com\n",
        b"=\n",
        b"=E9=",
        b"x-sender: alice@example.com\nx-receiver: bob@example.com\n",
    ]
    .iter()
    .map(|w| w.to_vec())
    .collect();
    for (_, bytes) in corpus {
        for line in bytes.split(|&b| b == b'\n') {
            if line.starts_with(b"--") && line.len() < 100 {
                words.push([line, b"\n"].concat());
            }
        }
    }
    words
}

/// One mutation of `input`, or a few in a row.
pub fn mutate(
    rng: &mut Rng,
    input: &[u8],
    corpus: &[(PathBuf, Vec<u8>)],
    dict: &[Vec<u8>],
) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        let line_start = v[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = v[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(v.len(), |i| at + i);
        match rng.below(12) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 => {
                let n = rng.below(64).min(v.len() - at);
                v.drain(at..at + n);
            }
            2 | 3 => {
                let word = rng.pick(dict).clone();
                v.splice(line_start..line_start, word);
            }
            4 => {
                // a slice of another input
                let other = &rng.pick(corpus).1;
                let from = rng.below(other.len());
                let n = rng.below(2000).min(other.len() - from);
                v.splice(at..at, other[from..from + n].to_vec());
            }
            5 => {
                // a line repeated, or made very long
                let line = v[line_start..line_end].to_vec();
                let times = if rng.below(2) == 0 {
                    2
                } else {
                    1 + rng.below(200)
                };
                let times = times.min(MAX_GROWTH / line.len().max(1)).max(1);
                let mut grown = Vec::new();
                for _ in 0..times {
                    grown.extend_from_slice(&line);
                }
                v.splice(line_start..line_end, grown);
            }
            6 => v.truncate(at),
            7 => {
                // the whole input nested in layers of multipart or message/rfc822
                let mut wrapped = b"From: alice@example.com\nTo: bob@example.com\n".to_vec();
                let depth = 1 + rng.below(150);
                let rfc822 = rng.below(2) == 0;
                for i in 0..depth {
                    if rfc822 {
                        wrapped.extend_from_slice(b"Content-Type: message/rfc822\n\n");
                    } else {
                        wrapped.extend_from_slice(
                            format!("Content-Type: multipart/mixed; boundary=w{i}\n\n--w{i}\n")
                                .as_bytes(),
                        );
                    }
                }
                wrapped.extend_from_slice(&v);
                v = wrapped;
            }
            8 => {
                // line ends turned into CRLF, CR, or LF
                let ends: [&[u8]; 3] = [b"\r\n", b"\r", b"\n"];
                let to = *rng.pick(&ends);
                let mut out = Vec::with_capacity(v.len() * 2);
                for &b in &v {
                    if b == b'\n' {
                        out.extend_from_slice(to);
                    } else if b != b'\r' {
                        out.push(b);
                    }
                }
                v = out;
            }
            9 => {
                // random bytes
                let n = 1 + rng.below(40);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, junk);
            }
            10 => {
                // a header line of random words, long enough to need folding now and then
                let words = rng.below(400);
                let mut line = b"X-Fuzz:".to_vec();
                for _ in 0..words {
                    line.push(b' ');
                    let longest = if rng.below(20) == 0 { 1500 } else { 12 };
                    let len = 1 + rng.below(longest);
                    line.extend(std::iter::repeat_n(b'a' + (rng.below(26) as u8), len));
                }
                line.push(b'\n');
                let at = v.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                v.splice(at..at, line);
            }
            _ => {
                let word = rng.pick(dict).clone();
                v.splice(at..at, word);
            }
        }
        v.truncate(MAX_INPUT);
    }
    v
}

/// What one mutation may add by repeating a line, and the most a mutant may hold: inputs stay
/// small enough to run thousands of them (the limits tests cover the huge ones).
const MAX_GROWTH: usize = 1 << 20;
const MAX_INPUT: usize = 4 << 20;
