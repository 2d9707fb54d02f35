//! ntfy (ntfy.sh or a server of your own): a POST of the message's body to the topic URL,
//! with its title, priority and tags in headers, and a bearer token if the topic needs one.

use super::{Message, What};
use crate::config::Notify;

pub async fn send(client: &reqwest::Client, n: &Notify, job: &str, msg: &Message) {
    let (priority, tags) = match msg.what {
        Some(What::Failed) => (n.priority, "rotating_light"),
        Some(What::Recovered) => (3, "white_check_mark"),
        Some(What::Warning) => (3, "warning"),
        Some(What::Succeeded) => (2, "floppy_disk"),
        None => (3, "bookmark_tabs"),
    };
    let mut req = client
        .post(n.url.expose())
        .header("Title", &msg.subject)
        .header("Priority", priority.to_string())
        .header("Tags", tags)
        .body(msg.body.clone());
    if let Some(token) = &n.token {
        req = req.bearer_auth(token.expose());
    }
    super::send(n, job, req).await;
}
