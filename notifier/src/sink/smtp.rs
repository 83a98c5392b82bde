//! One SMTP conversation of the sink: the commands it speaks, the replies its
//! [`Mode`] calls for, and the DATA section read back into the message as sent.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Mode, Shared};

/// Longest command line accepted, and largest message.
const MAX_LINE: u64 = 64 * 1024;
const MAX_MESSAGE: usize = 25 * 1024 * 1024;

/// The address inside `FROM:<a@b> SIZE=1` or `TO:<a@b>`.
fn address(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let inner = rest.strip_prefix('<')?.split_once('>')?.0;
    Some(inner.to_owned())
}

pub(super) async fn serve(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    // Each reply is one small write the client waits for: without this, Nagle's
    // algorithm meets the client's delayed ACK and every step waits ~40 ms.
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if shared.mode() == Mode::Refuse {
        shared.refused();
        write
            .write_all(b"421 4.3.2 onsale sink is refusing connections\r\n")
            .await?;
        return Ok(());
    }
    write.write_all(b"220 onsale-sink ESMTP\r\n").await?;
    let (mut from, mut to): (Option<String>, Vec<String>) = (None, Vec::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                "250-onsale-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 26214400\r\n".into()
            }
            "HELO" => "250 onsale-sink\r\n".into(),
            "MAIL" if shared.mode() == Mode::Refuse => {
                shared.refused();
                "451 4.3.0 onsale sink is refusing mail\r\n".into()
            }
            "MAIL" => match address(arg, "FROM:") {
                Some(sender) => {
                    (from, to) = (Some(sender), Vec::new());
                    "250 2.1.0 ok\r\n".into()
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" if from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
            "RCPT" if shared.mode() == Mode::Reject => "550 5.1.1 mailbox unavailable\r\n".into(),
            "RCPT" => match address(arg, "TO:") {
                Some(recipient) => {
                    to.push(recipient);
                    "250 2.1.5 ok\r\n".into()
                }
                None => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
            },
            "DATA" if to.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let Some(data) = read_data(&mut reader).await? else {
                    return Ok(());
                };
                let sender = from.take().unwrap_or_default();
                match data {
                    Some(data) => {
                        let n = shared.store(sender, std::mem::take(&mut to), data);
                        format!("250 2.0.0 ok: queued as {n}\r\n")
                    }
                    None => {
                        to.clear();
                        "552 5.3.4 message too big\r\n".into()
                    }
                }
            }
            "RSET" => {
                (from, to) = (None, Vec::new());
                "250 2.0.0 ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 ok\r\n".into(),
            "VRFY" => "252 2.1.5 cannot verify, will accept\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "500 5.5.2 command not recognised\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// Reads a DATA section up to the lone dot, undoing dot-stuffing. `None` when the
/// client went away; `Some(None)` when the message was too big (read to its end).
async fn read_data(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Option<String>>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    let mut too_big = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" || line == b".\n" {
            break;
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        if data.len() + unstuffed.len() > MAX_MESSAGE {
            too_big = true;
        } else {
            data.extend_from_slice(unstuffed);
        }
    }
    Ok(Some(
        (!too_big).then(|| String::from_utf8_lossy(&data).into_owned()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_addresses_parse() {
        assert_eq!(
            address("FROM:<a@x> SIZE=10", "FROM:").as_deref(),
            Some("a@x")
        );
        assert_eq!(address("from: <>", "FROM:").as_deref(), Some(""));
        assert_eq!(address("TO:<b@x>", "TO:").as_deref(), Some("b@x"));
        assert_eq!(address("TO:b@x", "TO:"), None);
        assert_eq!(address("FROM:<a@x>", "TO:"), None);
    }
}
