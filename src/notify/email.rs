//! Email through an SMTP server (lettre): STARTTLS, TLS from the first byte, or a plain
//! relay; the server's certificate is checked against the system's CAs (or
//! `$SSL_CERT_FILE`).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tracing::{info, warn};

use super::Message;
use crate::config::{Email, Notify, raw::SmtpTls};

/// Each SMTP command's wait for an answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole delivery, connection and TLS included: a server that trickles is given up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
const ATTEMPTS: usize = 2;

/// Send `msg`; a failure is logged and otherwise ignored.
pub async fn send(n: &Notify, job: &str, msg: &Message) {
    let Some(e) = &n.email else { return };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(DELIVERY_TIMEOUT, deliver(e, msg)).await {
            Ok(Ok(())) => {
                info!(job, "notified email {}: {}", n.redacted(), msg.subject);
                return;
            }
            Ok(Err(why)) => last = why,
            Err(_) => {
                last = format!("no answer within {}s", DELIVERY_TIMEOUT.as_secs());
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    warn!(
        job,
        "could not notify email {}: {last}; the run's outcome is unchanged",
        n.redacted()
    );
}

/// One delivery; the error is said without the password (lettre's errors never hold it).
async fn deliver(e: &Email, msg: &Message) -> Result<(), String> {
    let mut builder = lettre::Message::builder()
        .from(e.from.clone())
        .subject(msg.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION")).to_string());
    for to in &e.to {
        builder = builder.to(to.clone());
    }
    let mail = builder
        .body(msg.body.clone())
        .map_err(|err| format!("cannot build the message: {err}"))?;
    let tls = match e.tls {
        SmtpTls::None => Tls::None,
        mode => {
            let params = TlsParameters::new(e.host.clone())
                .map_err(|err| format!("cannot set up TLS: {err}"))?;
            if mode == SmtpTls::Tls {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(e.host.clone())
        .port(e.port)
        .tls(tls)
        .timeout(Some(COMMAND_TIMEOUT));
    if let (Some(user), Some(password)) = (&e.username, &e.password) {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    transport
        .build()
        .send(mail)
        .await
        .map(|_| ())
        .map_err(|err| err.to_string())
}
