//! Reading a caught message back: headers (unfolded, RFC 2047 encoded words
//! decoded) and the leaf parts of a MIME tree with their transfer encodings undone
//! (base64, quoted-printable). Just enough for tests and `catch-mail` to read what
//! lettre writes; not a general MIME parser (charsets other than UTF-8 are read as
//! UTF-8, lossily).

use super::Received;

/// One leaf part of a message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The MIME type, lower-cased, without parameters: `text/plain`.
    pub content_type: String,
    pub body: String,
}

impl Received {
    /// The first header called `name` (any case), unfolded and decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = split_head_body(&self.data);
        headers(head)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| decode_words(&value))
    }

    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    pub fn message_id(&self) -> Option<String> {
        self.header("Message-ID")
    }

    /// Every leaf part, in order (a message that is not multipart is one part).
    pub fn parts(&self) -> Vec<Part> {
        let mut out = Vec::new();
        collect_parts(&self.data, &mut out);
        out
    }

    /// The decoded body of the first part of `content_type`, e.g. `text/plain`.
    pub fn part(&self, content_type: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == content_type)
            .map(|p| p.body)
    }
}

fn split_head_body(raw: &str) -> (&str, &str) {
    match (raw.find("\r\n\r\n"), raw.find("\n\n")) {
        (Some(crlf), Some(lf)) if lf < crlf => (&raw[..lf], &raw[lf + 2..]),
        (Some(crlf), _) => (&raw[..crlf], &raw[crlf + 4..]),
        (None, Some(lf)) => (&raw[..lf], &raw[lf + 2..]),
        (None, None) => (raw, ""),
    }
}

/// `(name, value)` pairs with folded lines joined.
fn headers(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_owned(), value.trim_start().to_owned()));
        }
    }
    out
}

/// The value of parameter `name` in a header value: `multipart/alternative; boundary="x"`.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (key, val) = p.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"').to_owned())
    })
}

fn collect_parts(entity: &str, out: &mut Vec<Part>) {
    let (head, body) = split_head_body(entity);
    let headers = headers(head);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let content_type = get("Content-Type").unwrap_or_else(|| "text/plain".into());
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/")
        && let Some(boundary) = param(&content_type, "boundary")
    {
        for section in split_multipart(body, &boundary) {
            collect_parts(section, out);
        }
        return;
    }
    let encoding = get("Content-Transfer-Encoding")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => base64(body),
        "quoted-printable" => quoted_printable(body, false),
        _ => body.as_bytes().to_vec(),
    };
    out.push(Part {
        content_type: mime,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
}

/// The sections between `--boundary` lines, each without the line break that
/// belongs to the delimiter after it.
fn split_multipart<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut sections = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == delimiter || trimmed == format!("{delimiter}--") {
            if let Some(s) = start {
                let section = &body[s..offset];
                let section = section
                    .strip_suffix("\r\n")
                    .or_else(|| section.strip_suffix('\n'))
                    .unwrap_or(section);
                sections.push(section);
            }
            if trimmed.ends_with("--") && trimmed.len() > delimiter.len() {
                break;
            }
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    sections
}

/// Decodes the RFC 2047 encoded words in a header value (`=?utf-8?b?...?=`); the
/// whitespace between two adjacent encoded words is dropped, as the RFC says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = rest[start + 2..]
            .split_once("?=")
            .and_then(|(inner, tail)| {
                let mut fields = inner.splitn(3, '?');
                let (_charset, encoding, text) = (fields.next()?, fields.next()?, fields.next()?);
                let bytes = match encoding {
                    "B" | "b" => base64(text),
                    "Q" | "q" => quoted_printable(text, true),
                    _ => return None,
                };
                Some((String::from_utf8_lossy(&bytes).into_owned(), tail))
            });
        let Some((word, tail)) = decoded else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        let between = &rest[..start];
        if !(after_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&word);
        rest = tail;
        after_word = true;
    }
    out.push_str(rest);
    out
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable; `underscore_is_space` for the Q encoding of header words.
fn quoted_printable(text: &str, underscore_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b'_' if underscore_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(data: &str) -> Received {
        Received {
            from: "a@x".into(),
            to: vec!["b@x".into()],
            data: data.into(),
            received_at: chrono::Utc::now(),
            file: None,
        }
    }

    #[test]
    fn encodings_decode() {
        assert_eq!(base64("4oKsMTIuNTA="), "€12.50".as_bytes());
        assert_eq!(
            quoted_printable("=E2=82=AC12.50 a=\r\nb", false),
            "€12.50 ab".as_bytes()
        );
        assert_eq!(
            decode_words("=?utf-8?b?UmVmdW5k?= =?utf-8?q?_of_=E2=82=AC1?= for x"),
            "Refund of €1 for x"
        );
        assert_eq!(decode_words("plain =? text"), "plain =? text");
    }

    #[test]
    fn a_multipart_alternative_message_reads_back() {
        let data = "Subject: =?utf-8?b?8J+OnyBTaG93?=\r\n\tand more\r\n\
            Message-ID: <e1@onsale>\r\n\
            Content-Type: multipart/alternative;\r\n boundary=\"BOUND\"\r\n\r\n\
            --BOUND\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n\
            Paid: =E2=82=AC12.50\r\n\
            --BOUND\r\nContent-Type: text/html; charset=utf-8\r\n\
            Content-Transfer-Encoding: base64\r\n\r\n\
            PHA+SGk8L3A+\r\n\
            --BOUND--\r\n";
        let message = received(data);
        assert_eq!(message.subject().as_deref(), Some("🎟 Show\tand more"));
        assert_eq!(message.message_id().as_deref(), Some("<e1@onsale>"));
        let parts = message.parts();
        assert_eq!(parts.len(), 2);
        assert_eq!(message.part("text/plain").as_deref(), Some("Paid: €12.50"));
        assert_eq!(message.part("text/html").as_deref(), Some("<p>Hi</p>"));
    }
}
