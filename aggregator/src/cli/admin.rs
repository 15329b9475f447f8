//! The CLI's admin commands: certificates, revocations, tokens and the audit log. Every change is
//! written to the audit log as `cli:<unix user>` from `local`.

use std::path::PathBuf;

use twinwatch_aggregator::access::audit::{cli_caller, AuditLog, Outcome, Record};
use twinwatch_aggregator::access::certs;
use twinwatch_aggregator::access::revocation::REVOCATION_POLL;
use twinwatch_aggregator::access::revocation::{Revocations, Target};
use twinwatch_aggregator::access::tokens::{Role, Tokens};
use twinwatch_aggregator::config::Config;
use twinwatch_common::time::now_ms;

fn audit_log(config: &Config) -> AuditLog {
    AuditLog::new(config.audit.path.clone(), config.audit.max_file_bytes, config.audit.keep)
}

/// Records `result` in the audit log (with `detail` of a success) and passes it on. An
/// unwritable log is reported but does not undo what was done.
pub fn audited<T, E: std::fmt::Display>(
    config: &Config,
    action: &str,
    target: &str,
    result: Result<T, E>,
    detail: impl FnOnce(&T) -> String,
) -> Result<T, E> {
    let (who, from) = cli_caller();
    let (outcome, detail) = match &result {
        Ok(t) => (Outcome::Ok, detail(t)),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    let record = Record::new(now_ms(), &who, &from, action, target, outcome).with_detail(detail);
    if let Err(e) = audit_log(config).append(&record) {
        eprintln!("warning: {e}: this action is not in the audit log");
    }
    result
}

pub fn certs_init(config: &Config, names: &[String], force: bool) -> anyhow::Result<()> {
    let dir = config.certs_dir.display().to_string();
    let detail =
        |_: &()| format!("names: localhost {}{}", names.join(" "), if force { ", replacing the CA" } else { "" });
    audited(config, "certs.init", &dir, certs::init(&config.certs_dir, names, force), detail)?;
    println!("CA and server certificate written to {dir}");
    Ok(())
}

pub fn certs_issue(config: &Config, agent: &str, dc: &str, out: Option<PathBuf>, days: i64) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| PathBuf::from(agent));
    let issued = certs::issue(&config.certs_dir, agent, dc, days, &out);
    let detail = |i: &certs::Issued| format!("dc {dc}, serial {}, valid {days} days", i.serial);
    let issued = audited(config, "certs.issue", agent, issued, detail)?;
    println!("agent {agent} in {dc}: {} {} {}", issued.cert.display(), issued.key.display(), issued.ca.display());
    println!("serial {}", issued.serial);
    Ok(())
}

pub fn certs_revoke(
    config: &Config,
    agent: Option<String>,
    serial: Option<String>,
    reason: &str,
) -> anyhow::Result<()> {
    let (who, _) = cli_caller();
    let (action, target) = match (&agent, &serial) {
        (Some(a), None) => ("agent.revoke", Target::agent(a)),
        (None, Some(s)) => ("certificate.revoke", Target::serial(s)),
        _ => anyhow::bail!("give one of --agent ID or --serial HEX"),
    };
    let name = agent.or(serial).unwrap_or_default();
    let result =
        target.and_then(|t| Revocations::open(config.revocations_file.clone())?.revoke(t, &who, reason, now_ms()));
    let r = audited(config, action, &name, result, |r| r.reason.clone())?;
    let applies = r.to_json()["applies_to"].as_str().unwrap_or_default().to_owned();
    println!("revoked: {applies}");
    println!(
        "a running aggregator closes its connection within {}s and refuses it at every handshake",
        REVOCATION_POLL.as_secs()
    );
    Ok(())
}

pub fn certs_revocations(config: &Config) -> anyhow::Result<()> {
    let revocations = Revocations::open(config.revocations_file.clone())?;
    let (_, list) = revocations.current();
    if list.entries().is_empty() {
        println!("no revocations in {}", config.revocations_file.display());
    }
    for r in list.entries() {
        let j = r.to_json();
        let s = |k: &str| j[k].as_str().unwrap_or_default().to_owned();
        println!("{}  {} {}  by {}  {}", s("revoked_at"), s("kind"), s("target"), s("by"), s("reason"));
    }
    Ok(())
}

pub fn tokens_create(config: &Config, role: Role, name: &str) -> anyhow::Result<()> {
    let created = Tokens::new(config.tokens_file.clone()).create(role, name, now_ms());
    let target = created.as_ref().map_or(name.to_owned(), |t| t.name.clone());
    let created = audited(config, "token.create", &target, created, |_| format!("role {}", role.as_str()))?;
    // The secret alone on stdout, for `> read-token`; the rest on stderr.
    eprintln!("{} token {:?} created; it is shown only now", role.as_str(), created.name);
    println!("{}", created.secret);
    Ok(())
}

pub fn tokens_list(config: &Config) -> anyhow::Result<()> {
    let list = Tokens::new(config.tokens_file.clone()).list()?;
    let width = list.iter().map(|t| t.name.len()).max().unwrap_or(0).max(4);
    println!("{:width$}  ROLE   CREATED", "NAME");
    for t in list {
        println!("{:width$}  {:5}  {}", t.name, t.role.as_str(), t.created.as_deref().unwrap_or("-"));
    }
    Ok(())
}

pub fn tokens_revoke(config: &Config, name: &str) -> anyhow::Result<()> {
    let result = Tokens::new(config.tokens_file.clone()).revoke(name);
    let gone = audited(config, "token.revoke", name, result, |t| format!("role {}", t.role.as_str()))?;
    println!("token {:?} ({}) revoked", gone.name, gone.role.as_str());
    Ok(())
}

pub fn audit(config: &Config, limit: usize) -> anyhow::Result<()> {
    for r in audit_log(config).recent(limit)? {
        let outcome =
            serde_json::to_value(r.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let detail = if r.detail.is_empty() { String::new() } else { format!("  ({})", r.detail) };
        println!("{}  {}  {}  {} {}  {}{detail}", r.time, r.who, r.from, r.action, r.target, outcome);
    }
    Ok(())
}
