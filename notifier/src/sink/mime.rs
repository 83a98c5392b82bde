//! Reading a caught message back, for tests and `catch-mail`'s log: its headers
//! (unfolded, RFC 2047 encoded words decoded) and its leaf parts with their transfer
//! encodings undone and their charsets decoded. `mail-parser` does the reading.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::Received;

/// One leaf part of a message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The MIME type, lower-cased, without parameters: `text/plain`.
    pub content_type: String,
    pub body: String,
}

impl Received {
    fn parsed(&self) -> Option<Message<'_>> {
        MessageParser::default().parse(self.data.as_bytes())
    }

    /// The first header called `name` (any case), unfolded and decoded, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        let message = self.parsed()?;
        let header = message
            .headers()
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))?;
        match header.value().as_text() {
            Some(text) => Some(text.to_owned()),
            // A structured header (an address, a date, an id list) as written.
            None => message
                .header_raw(header.name())
                .map(|raw| raw.trim().to_owned()),
        }
    }

    pub fn subject(&self) -> Option<String> {
        self.parsed()?.subject().map(str::to_owned)
    }

    /// The `Message-ID` as written: `<id@host>`.
    pub fn message_id(&self) -> Option<String> {
        self.parsed()?.message_id().map(|id| format!("<{id}>"))
    }

    /// Every leaf part, in order (a message that is not multipart is one part).
    pub fn parts(&self) -> Vec<Part> {
        let Some(message) = self.parsed() else {
            return Vec::new();
        };
        message.parts.iter().filter_map(leaf).collect()
    }

    /// The bytes of every part of `content_type` (e.g. `image/png`), with its
    /// `Content-ID` (without the angle brackets) when it has one.
    pub fn binary_parts(&self, content_type: &str) -> Vec<(Option<String>, Vec<u8>)> {
        let Some(message) = self.parsed() else {
            return Vec::new();
        };
        message
            .parts
            .iter()
            .filter(|part| {
                part.content_type().is_some_and(|ct| {
                    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
                        .eq_ignore_ascii_case(content_type)
                })
            })
            .map(|part| {
                (
                    part.content_id()
                        .map(|id| id.trim_matches(['<', '>']).to_owned()),
                    part.contents().to_vec(),
                )
            })
            .collect()
    }

    /// The decoded body of the first part of `content_type`, e.g. `text/plain`.
    pub fn part(&self, content_type: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == content_type)
            .map(|p| p.body)
    }
}

/// A part with a body of its own (not a multipart container or a nested message).
fn leaf(part: &MessagePart<'_>) -> Option<Part> {
    let body = match &part.body {
        PartType::Text(text) | PartType::Html(text) => text.to_string(),
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        PartType::Message(_) | PartType::Multipart(_) => return None,
    };
    let content_type = part.content_type().map_or_else(
        || "text/plain".to_owned(),
        |ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
    );
    Some(Part { content_type, body })
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
    fn a_multipart_alternative_message_reads_back() {
        let data = "Subject: =?utf-8?b?8J+OnyBTaG93?=\r\n\tand more\r\n\
            Message-ID: <e1@onsale>\r\n\
            X-Onsale-Request-Id: 7f3c\r\n\
            Content-Type: multipart/alternative;\r\n boundary=\"BOUND\"\r\n\r\n\
            --BOUND\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n\
            Paid: =E2=82=AC12.50 a=\r\nb\r\n\
            --BOUND\r\nContent-Type: text/html; charset=utf-8\r\n\
            Content-Transfer-Encoding: base64\r\n\r\n\
            PHA+SGk8L3A+\r\n\
            --BOUND--\r\n";
        let message = received(data);
        let subject = message.subject().expect("a subject");
        assert!(
            subject.starts_with("🎟 Show") && subject.ends_with("and more"),
            "{subject:?}"
        );
        assert_eq!(message.message_id().as_deref(), Some("<e1@onsale>"));
        assert_eq!(
            message.header("x-onsale-request-id").as_deref(),
            Some("7f3c")
        );
        let parts = message.parts();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(
            message.part("text/plain").as_deref(),
            Some("Paid: €12.50 ab")
        );
        assert_eq!(message.part("text/html").as_deref(), Some("<p>Hi</p>"));
    }

    #[test]
    fn a_latin1_part_is_decoded_from_its_charset() {
        let data = "Subject: =?iso-8859-1?q?Caf=E9?=\r\n\
            Content-Type: text/plain; charset=iso-8859-1\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n\
            Caf=E9 cr=E8me\r\n";
        let message = received(data);
        assert_eq!(message.subject().as_deref(), Some("Café"));
        assert_eq!(
            message.part("text/plain").as_deref().map(str::trim_end),
            Some("Café crème")
        );
    }
}
