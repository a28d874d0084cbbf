//! The MIME tree of a message body, found in one pass over its lines with an explicit stack: no
//! recursion as deep as the input nests, and linear time however it nests.
//!
//! The stack holds the entities open at the current line, outermost first. A line is first checked
//! for being a delimiter of an open multipart: its boundary (the line without `--`, trailing white
//! space and a closing `--`) is looked up in a map from boundary to the open multiparts using it, so
//! the check costs the line's length, not the depth. The outermost multipart wins, as when every
//! multipart is split before its parts are (RFC 2046 §5.1.1: a boundary must not occur inside an
//! enclosed part, so an outer delimiter ends every part inside). Otherwise the line belongs to the
//! innermost entity: a header line while its header block is read, else a body line, which needs
//! nothing. The limits are checked as entities are found, so scanning stops at the first one crossed.

use std::collections::HashMap;

use super::content_type::{ContentType, content_type, trim_wsp_end};
use super::entity::{memchr, trim_eol};
use super::{Field, Limits, MAX_LINE, ParseError};

/// One MIME entity of the tree.
pub(super) struct Node<'a> {
    pub fields: Vec<Field<'a>>,
    pub kind: Kind<'a>,
    /// A Content-Type field was read (only the message's own entity gets one made up otherwise)
    pub has_type: bool,
    pub is_text: bool,
    /// Content-Transfer-Encoding, lowercase (`7bit` when absent)
    pub cte: String,
}

pub(super) enum Kind<'a> {
    Leaf {
        body: &'a [u8],
    },
    Multipart {
        boundary: Vec<u8>,
        preamble: &'a [u8],
        parts: Vec<usize>,
        epilogue: &'a [u8],
        /// No delimiter line at all: `preamble` holds the whole body
        delimited: bool,
    },
    /// message/rfc822 or message/global: the embedded message's own header fields other than
    /// Content-*, and its entity (its Content-* fields and body)
    Message {
        headers: Vec<Field<'a>>,
        child: usize,
    },
}

/// What the innermost open entity is reading.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// its header block; `embedded`: the message inside a message/rfc822 entity
    Headers {
        embedded: bool,
    },
    Leaf,
    Preamble,
    /// a part is open above it on the stack
    Part,
    Epilogue,
    /// its embedded message is open above it on the stack
    Message,
}

/// Whether a header line was taken, or ended the header block and is to be read again.
#[derive(PartialEq, Eq)]
enum Line {
    Taken,
    Again,
}

struct Open {
    node: usize,
    depth: usize,
    /// where the entity starts (Headers), else where the span being read starts
    start: usize,
    mode: Mode,
}

/// The tree of the entity whose header fields are `fields` and whose body is `body`; node 0 is it.
pub(super) fn scan<'a>(
    fields: Vec<Field<'a>>,
    body: &'a [u8],
    limits: &Limits,
) -> Result<Vec<Node<'a>>, ParseError> {
    let mut s = Scanner {
        input: body,
        nodes: Vec::new(),
        stack: Vec::new(),
        boundaries: HashMap::new(),
        limits,
    };
    s.enter(0, 1, Mode::Headers { embedded: false })?;
    s.nodes[0].fields = fields;
    s.end_headers(0)?;
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = trim_eol(&body[pos..end]);
        // a line that ends a header block without a blank line is the body's first: it is read
        // again as that (it may be a delimiter of the multipart whose header block it ended)
        loop {
            match s.delimiter(line) {
                Some((at, closing)) => s.delimited(at, closing, pos, end)?,
                None => {
                    if let Mode::Headers { embedded } = s.top().mode
                        && s.header_line(pos, end, embedded)? == Line::Again
                    {
                        continue;
                    }
                }
            }
            break;
        }
        pos = end;
    }
    s.close(0, body.len())?;
    Ok(s.nodes)
}

struct Scanner<'a, 'l> {
    input: &'a [u8],
    nodes: Vec<Node<'a>>,
    stack: Vec<Open>,
    /// boundary → stack positions of the open multiparts (before their closing delimiter) using it
    boundaries: HashMap<Vec<u8>, Vec<usize>>,
    limits: &'l Limits,
}

impl<'a> Scanner<'a, '_> {
    fn top(&mut self) -> &mut Open {
        self.stack
            .last_mut()
            .expect("the message's entity stays open")
    }

    /// Opens a new entity at `start`.
    fn enter(&mut self, start: usize, depth: usize, mode: Mode) -> Result<usize, ParseError> {
        if depth > self.limits.max_mime_depth {
            return Err(ParseError::TooDeep {
                max: self.limits.max_mime_depth,
            });
        }
        if self.nodes.len() >= self.limits.max_mime_parts {
            return Err(ParseError::TooManyParts {
                max: self.limits.max_mime_parts,
            });
        }
        self.nodes.push(Node {
            fields: Vec::new(),
            kind: Kind::Leaf { body: &[] },
            has_type: false,
            is_text: true,
            cte: "7bit".into(),
        });
        let node = self.nodes.len() - 1;
        self.stack.push(Open {
            node,
            depth,
            start,
            mode,
        });
        Ok(node)
    }

    /// The open multipart whose delimiter `line` is, outermost first, and whether it is the closing one.
    fn delimiter(&self, line: &[u8]) -> Option<(usize, bool)> {
        if self.boundaries.is_empty() || !line.starts_with(b"--") {
            return None;
        }
        let rest = trim_wsp_end(&line[2..]);
        let open = self.boundaries.get(rest).map(|v| (v[0], false));
        let closing = rest
            .strip_suffix(b"--")
            .and_then(|b| self.boundaries.get(b))
            .map(|v| (v[0], true));
        match (open, closing) {
            (Some(o), Some(c)) => Some(if c.0 < o.0 { c } else { o }),
            (o, c) => o.or(c),
        }
    }

    /// A delimiter line (`pos..end`) of the multipart at stack position `at`.
    fn delimited(
        &mut self,
        at: usize,
        closing: bool,
        pos: usize,
        end: usize,
    ) -> Result<(), ParseError> {
        // the line break before a delimiter belongs to it
        let lo = self.stack[at].start;
        let mut content_end = pos;
        if content_end > lo && self.input[content_end - 1] == b'\n' {
            content_end -= 1;
            while content_end > lo && self.input[content_end - 1] == b'\r' {
                content_end -= 1;
            }
        }
        self.close(at + 1, content_end)?;
        let open = &mut self.stack[at];
        let (node, depth, start) = (open.node, open.depth, open.start);
        if open.mode == Mode::Preamble
            && let Kind::Multipart {
                preamble,
                delimited,
                ..
            } = &mut self.nodes[node].kind
        {
            *preamble = &self.input[start..content_end.max(start)];
            *delimited = true;
        }
        if closing {
            let open = &mut self.stack[at];
            open.mode = Mode::Epilogue;
            open.start = end;
            self.forget_boundary(node);
            return Ok(());
        }
        self.stack[at].mode = Mode::Part;
        let part = self.enter(end, depth + 1, Mode::Headers { embedded: false })?;
        if let Kind::Multipart { parts, .. } = &mut self.nodes[node].kind {
            parts.push(part);
        }
        Ok(())
    }

    /// One line of the header block of the innermost entity.
    fn header_line(&mut self, pos: usize, end: usize, embedded: bool) -> Result<Line, ParseError> {
        let input = self.input;
        let open = self.top();
        let (node, start) = (open.node, open.start);
        if end - start > self.limits.max_header_bytes {
            return Err(ParseError::PartHeaderTooLarge {
                max: self.limits.max_header_bytes,
            });
        }
        let content = trim_eol(&input[pos..end]);
        let fields = &mut self.nodes[node].fields;
        if content.is_empty() {
            self.end_headers(end)?;
            return Ok(Line::Taken);
        }
        if content[0] == b' ' || content[0] == b'\t' {
            match fields.last_mut() {
                Some(last) => {
                    let from = last.raw.as_ptr() as usize - input.as_ptr() as usize;
                    last.raw = trim_eol(&input[from..end]);
                }
                None => self.no_headers(embedded),
            }
            return Ok(Line::Taken);
        }
        let colon = memchr(b':', content);
        let name_ok =
            colon.is_some_and(|c| c > 0 && content[..c].iter().all(|&b| (33..=126).contains(&b)));
        match colon {
            Some(c) if name_ok => {
                let name = std::str::from_utf8(&content[..c]).expect("checked ASCII");
                fields.push(Field { name, raw: content });
                Ok(Line::Taken)
            }
            _ if fields.is_empty() => {
                self.no_headers(embedded);
                Ok(Line::Taken)
            }
            // a line that is no field ends a sloppy header block: it is the body's first line
            _ => {
                self.end_headers(pos)?;
                Ok(Line::Again)
            }
        }
    }

    /// The innermost entity starts with a line that is neither a field nor a blank line: it has no
    /// header block. A part is then all body (text/plain by default); the body of a message/rfc822
    /// entity is then no message, and that entity is a leaf.
    fn no_headers(&mut self, embedded: bool) {
        if embedded {
            let child = self.stack.pop().expect("the embedded message is open");
            self.nodes.pop();
            let parent = self.top();
            parent.mode = Mode::Leaf;
            parent.start = child.start;
            let node = parent.node;
            self.nodes[node].kind = Kind::Leaf { body: &[] };
        } else {
            self.top().mode = Mode::Leaf;
        }
    }

    /// The header block of the innermost entity ends; its body starts at `body`.
    fn end_headers(&mut self, body: usize) -> Result<(), ParseError> {
        let open = self.top();
        let (node, depth) = (open.node, open.depth);
        let embedded = open.mode == (Mode::Headers { embedded: true });
        if embedded {
            // the embedded message's routing fields go to its parent, its Content-* fields stay
            let all = std::mem::take(&mut self.nodes[node].fields);
            let (content, headers): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|f| f.is_content());
            self.nodes[node].fields = content;
            let parent = self.stack[self.stack.len() - 2].node;
            if let Kind::Message { headers: h, .. } = &mut self.nodes[parent].kind {
                *h = headers;
            }
        }
        let ContentType {
            ctype,
            subtype,
            boundary,
            ..
        } = content_type(&self.nodes[node].fields)?;
        let n = &mut self.nodes[node];
        n.has_type = ctype.is_some();
        n.is_text = ctype.as_deref().is_none_or(|t| t == "text");
        n.cte = n
            .fields
            .iter()
            .rev()
            .find(|f| f.is("content-transfer-encoding"))
            .map(|f| {
                let v = &f.raw[f.name.len() + 1..];
                String::from_utf8_lossy(v).trim().to_ascii_lowercase()
            })
            .unwrap_or_else(|| "7bit".into());
        let stack_at = self.stack.len() - 1;
        let open = self.top();
        open.start = body;
        match (ctype.as_deref(), subtype.as_deref(), boundary) {
            (Some("multipart"), _, Some(boundary)) => {
                if boundary.len() + 4 > MAX_LINE {
                    return Err(ParseError::Malformed(format!(
                        "a boundary of {} octets makes delimiter lines over 998 octets",
                        boundary.len()
                    )));
                }
                open.mode = Mode::Preamble;
                self.boundaries
                    .entry(boundary.clone())
                    .or_default()
                    .push(stack_at);
                self.nodes[node].kind = Kind::Multipart {
                    boundary,
                    preamble: &[],
                    parts: Vec::new(),
                    epilogue: &[],
                    delimited: false,
                };
            }
            (Some("message"), Some("rfc822" | "global"), _) => {
                open.mode = Mode::Message;
                let child = self.enter(body, depth + 1, Mode::Headers { embedded: true })?;
                self.nodes[node].kind = Kind::Message {
                    headers: Vec::new(),
                    child,
                };
            }
            _ => open.mode = Mode::Leaf,
        }
        Ok(())
    }

    /// Ends every entity at stack position `keep` or above at `end` (each at its own start at least).
    fn close(&mut self, keep: usize, end: usize) -> Result<(), ParseError> {
        while self.stack.len() > keep {
            let open = self.top();
            let (node, start, mode) = (open.node, open.start, open.mode);
            let span = &self.input[start..end.max(start)];
            match mode {
                // a header block cut short: the entity has these fields and an empty body (for an
                // embedded message that may open one more, empty, entity: closed on the next turn)
                Mode::Headers { .. } => {
                    self.end_headers(end.max(start))?;
                    continue;
                }
                Mode::Leaf => self.nodes[node].kind = Kind::Leaf { body: span },
                Mode::Preamble => {
                    self.forget_boundary(node);
                    if let Kind::Multipart { preamble, .. } = &mut self.nodes[node].kind {
                        *preamble = span;
                    }
                }
                Mode::Part => self.forget_boundary(node),
                Mode::Epilogue => {
                    if let Kind::Multipart { epilogue, .. } = &mut self.nodes[node].kind {
                        *epilogue = span;
                    }
                }
                Mode::Message => {}
            }
            self.stack.pop();
        }
        Ok(())
    }

    /// The multipart `node` takes no more delimiters: it is the innermost open one using its boundary.
    fn forget_boundary(&mut self, node: usize) {
        if let Kind::Multipart { boundary, .. } = &self.nodes[node].kind
            && let Some(open) = self.boundaries.get_mut(boundary)
        {
            open.pop();
            if open.is_empty() {
                self.boundaries.remove(boundary);
            }
        }
    }
}
