//! Applying and removing the rules on the running kernel.
//!
//! Each family gets one `iptables-restore --noflush` run whose payload first removes
//! whatever an earlier run left (so running twice leaves one set of rules) and then adds
//! the new rules. If that run fails, or IPv6 fails after IPv4 succeeded, every table
//! touched is restored from the `iptables-save` taken just before: nothing is left half
//! applied. Cleanup removes our chains and our rules in the kernel's chains, and nothing
//! else.

use crate::builder::{Builder, RuleSet};
use crate::plan;
use crate::tools::{self, Family, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Tool(#[from] ToolError),
    #[error("{family} rules were not applied, and the tables were restored as they were: {cause}")]
    RolledBack {
        family: &'static str,
        cause: ToolError,
    },
    #[error(
        "{family} rules failed ({cause}) and restoring the earlier tables failed too: {rollback}"
    )]
    RollbackFailed {
        family: &'static str,
        cause: ToolError,
        rollback: ToolError,
    },
}

fn families(b: &Builder) -> Vec<(Family, &RuleSet)> {
    let mut v = vec![(Family::V4, &b.v4)];
    if b.ipv6() {
        v.push((Family::V6, &b.v6));
    }
    v
}

fn name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// A family about to change, and how to put it back: the tables its payload touches,
/// as `iptables-save` printed them before.
struct Undo {
    family: Family,
    saved: String,
}

impl Undo {
    fn new(family: Family, saved: &str, payload: &str) -> Undo {
        Undo {
            family,
            saved: plan::select_tables(saved, &plan::touched_tables(payload)),
        }
    }

    fn run(&self) -> Result<(), ToolError> {
        if self.saved.is_empty() {
            return Ok(());
        }
        tools::restore_tables(self.family, &self.saved)
    }
}

/// Puts back every family in `done` (newest first) after `cause` stopped `family`.
fn roll_back(done: &[Undo], family: Family, cause: ToolError) -> ApplyError {
    for undo in done.iter().rev() {
        if let Err(rollback) = undo.run() {
            return ApplyError::RollbackFailed {
                family: name(family),
                cause,
                rollback,
            };
        }
    }
    if done.is_empty() {
        // Nothing was changed: the tool's own error says it all.
        return ApplyError::Tool(cause);
    }
    ApplyError::RolledBack {
        family: name(family),
        cause,
    }
}

/// Runs one family's payload, recording how to undo it in `done`.
fn restore(
    family: Family,
    saved: &str,
    payload: &str,
    done: &mut Vec<Undo>,
) -> Result<(), ApplyError> {
    if payload.is_empty() {
        return Ok(());
    }
    match tools::restore_noflush(family, payload) {
        Ok(()) => {
            done.push(Undo::new(family, saved, payload));
            Ok(())
        }
        // Refused outright: this family is unchanged.
        Err(cause @ (ToolError::Missing { .. } | ToolError::Permission { .. })) => {
            Err(roll_back(done, family, cause))
        }
        // A failed run may still have committed some tables.
        Err(cause) => {
            done.push(Undo::new(family, saved, payload));
            Err(roll_back(done, family, cause))
        }
    }
}

fn change(b: &Builder, install: bool) -> Result<(), ApplyError> {
    let mut done: Vec<Undo> = Vec::new();
    for (family, rules) in families(b) {
        let saved = tools::save(family).map_err(|cause| roll_back(&done, family, cause))?;
        let payload = plan::payload(&saved, rules, install, &mut |table, chain, params| {
            tools::exists(family, table, chain, params)
        });
        restore(family, &saved, &payload, &mut done)?;
    }
    Ok(())
}

/// Installs `b`'s rules, replacing any an earlier run left.
pub fn apply(b: &Builder) -> Result<(), ApplyError> {
    change(b, true)
}

/// Removes our chains, and our rules in the kernel's chains, for both families.
pub fn cleanup(b: &Builder) -> Result<(), ApplyError> {
    change(b, false)
}
