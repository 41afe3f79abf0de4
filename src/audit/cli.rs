//! The `gaitkeeper audit` commands: `tail` (the newest events as JSON lines, optionally
//! following new ones) and `show INCIDENT` (every event of one login, for the support team
//! holding a block page's reference). They read the same store the proxy writes, while it runs.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::runtime::utc;
use crate::store::{AuditEvent, Store};

/// What `gaitkeeper audit` can do.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print the newest audit events as JSON lines, oldest first.
    Tail {
        /// How many events (1 to 1000).
        #[arg(short = 'n', long = "lines", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        lines: u16,
        /// Keep printing new events as they are stored (stop with Ctrl-C).
        #[arg(short, long)]
        follow: bool,
    },
    /// Show every audit event of one incident (the reference on a block page).
    Show {
        /// The incident reference, e.g. GK-7F3K9Q2M4D.
        incident: String,
    },
}

/// How often `tail --follow` looks for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Runs one `audit` command against the store `config` names, writing to `out`.
pub fn run(config: &Config, command: AuditCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store =
            Store::open(&config.store, &config.server.data_dir, &config.secrets.key).await?;
        let result = execute(&store, command, out).await;
        store.close().await;
        result
    })
}

async fn execute(store: &Store, command: AuditCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail { lines, follow } => {
            let mut last = None;
            let mut events = store.audit_tail(lines.into(), None).await?;
            loop {
                for event in &events {
                    serde_json::to_writer(&mut *out, &line(event))?;
                    writeln!(out)?;
                    last = Some(event.id);
                }
                out.flush()?;
                if !follow {
                    return Ok(());
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
                events = store
                    .audit_tail(crate::store::MAX_PAGE, last.or(Some(0)))
                    .await?;
            }
        }
        AuditCommand::Show { incident } => {
            let incident = incident.trim().to_ascii_uppercase();
            let events = store.audit_by_incident(&incident).await?;
            if events.is_empty() {
                anyhow::bail!(
                    "no audit events for incident {incident:?} in the store at {}; check the reference (GK- and 10 letters or digits) and that `--config` names the proxy's store",
                    store.url()
                );
            }
            writeln!(out, "incident {incident}: {} events", events.len())?;
            for event in &events {
                show(event, out)?;
            }
            Ok(())
        }
    }
}

/// One event as a JSON line: the record as the proxy streamed it, plus the store's event id.
fn line(event: &AuditEvent) -> serde_json::Value {
    let mut value = match &event.detail {
        serde_json::Value::Object(detail) if detail.contains_key("kind") => event.detail.clone(),
        detail => serde_json::json!({
            "at": crate::runtime::unix_millis(event.at),
            "kind": event.kind,
            "detail": detail,
        }),
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("event_id".into(), event.id.into());
    }
    value
}

/// One event for people: time and kind, then each recorded field on its own line.
fn show(event: &AuditEvent, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out)?;
    writeln!(out, "{}  {}", utc(event.at), event.kind)?;
    let Some(fields) = event.detail.as_object() else {
        return Ok(());
    };
    for (name, value) in fields {
        if matches!(name.as_str(), "at" | "kind" | "incident" | "id") {
            continue;
        }
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        writeln!(out, "  {name:<11} {text}")?;
    }
    Ok(())
}
