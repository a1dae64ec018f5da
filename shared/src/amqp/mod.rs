//! RabbitMQ: connecting (plain or TLS), the topology, and a confirming publisher.

pub mod dead_letters;
pub mod headers;
pub mod publisher;
pub mod topology;

use anyhow::Context;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};

use crate::config::{redact_url, AmqpConfig};

pub use publisher::{PublishError, Publisher};
pub use topology::Topology;

/// Opens a connection. `name` shows in the RabbitMQ management UI (`buyonce-worker@host`).
///
/// TLS (`amqps://`) uses the system roots unless `BUYONCE_AMQP_CA_FILE` names a CA, and a
/// client certificate when one is configured. Errors carry the URL without its password.
pub async fn connect(cfg: &AmqpConfig, name: &str) -> anyhow::Result<Connection> {
    let url = &with_heartbeat(cfg.url.expose(), cfg.heartbeat);
    let target = redact_url(url);
    let mut tls = OwnedTLSConfig::default();
    if let Some(ca) = &cfg.ca_file {
        tls.cert_chain = Some(
            std::fs::read_to_string(ca)
                .with_context(|| format!("BUYONCE_AMQP_CA_FILE: cannot read {}", ca.display()))?,
        );
    }
    if let (Some(cert), Some(key)) = (&cfg.client_cert_file, &cfg.client_key_file) {
        tls.identity = Some(OwnedIdentity::PKCS8 {
            pem: std::fs::read(cert).with_context(|| {
                format!(
                    "BUYONCE_AMQP_CLIENT_CERT_FILE: cannot read {}",
                    cert.display()
                )
            })?,
            key: std::fs::read(key).with_context(|| {
                format!(
                    "BUYONCE_AMQP_CLIENT_KEY_FILE: cannot read {}",
                    key.display()
                )
            })?,
        });
    }
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime().context("AMQP runtime")?;
    let connect = Connection::connect_with_config(url, props, tls, runtime);
    // A TLS listener that never answers a plain handshake would otherwise hang forever.
    match tokio::time::timeout(std::time::Duration::from_secs(20), connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            let mut why = describe_error(&e);
            // A TLS listener answers a plain AMQP header with a TLS alert and a reset, which
            // lapin reports only as an unparsable frame or a reset connection.
            let not_amqp = match e.kind() {
                lapin::ErrorKind::ParsingError(_) => true,
                lapin::ErrorKind::IOError(io) => matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ),
                _ => false,
            };
            if not_amqp && !url.starts_with("amqps:") {
                why.push_str(
                    " (the server did not speak AMQP: is this a TLS port that needs an amqps:// URL?)",
                );
            } else if not_amqp && cfg.client_cert_file.is_none() {
                // With TLS 1.3 a server that requires a client certificate rejects after the
                // client's handshake is done: the client sees the alert or only a reset.
                why.push_str(
                    " (the TLS server closed the connection: if it requires a client certificate, \
                     set BUYONCE_AMQP_CLIENT_CERT_FILE and BUYONCE_AMQP_CLIENT_KEY_FILE)",
                );
            }
            Err(anyhow::anyhow!(
                "cannot connect to RabbitMQ at {target}: {why}"
            ))
        }
        Err(_) => Err(anyhow::anyhow!(
            "cannot connect to RabbitMQ at {target}: no AMQP handshake within 20s \
             (a TLS-only listener reached with amqp://, or the wrong port?)"
        )),
    }
}

/// `url` asking for `heartbeat` unless it names a heartbeat of its own. lapin takes the
/// smaller of this and the server's (RabbitMQ's default is 60 s) and closes a connection that
/// has been silent for two of them; so does the broker, which then requeues its unacked
/// messages for the other consumers.
fn with_heartbeat(url: &str, heartbeat: std::time::Duration) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={}", heartbeat.as_secs())
}

/// A lapin error with its causes, and a hint for certificate problems.
pub fn describe_error(e: &lapin::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalid peer")
    {
        text.push_str(" (TLS certificate problem: check BUYONCE_AMQP_CA_FILE and the host name in BUYONCE_AMQP_URL)");
    }
    text
}

/// Messages ready in `queue` (declared passively on a short-lived channel: an error if the
/// queue does not exist).
pub async fn queue_len(connection: &Connection, queue: &str) -> anyhow::Result<u32> {
    let channel = connection.create_channel().await?;
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let _ = channel.close(200, "done".into()).await;
    Ok(q.message_count())
}

#[cfg(test)]
mod tests {
    use super::with_heartbeat;
    use std::time::Duration;

    #[test]
    fn the_heartbeat_is_asked_for_unless_the_url_names_one() {
        let d = Duration::from_secs(15);
        assert_eq!(
            with_heartbeat("amqp://h/%2f", d),
            "amqp://h/%2f?heartbeat=15"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?frame_max=8192", d),
            "amqp://h/%2f?frame_max=8192&heartbeat=15"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?heartbeat=5", d),
            "amqp://h/%2f?heartbeat=5"
        );
    }
}
