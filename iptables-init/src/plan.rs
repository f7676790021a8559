//! What to send `iptables-restore --noflush` so that, whatever an earlier run left, one
//! transaction per table leaves exactly the new rules (apply) or none of ours (cleanup).
//!
//! Pure: it reads the current state as `iptables-save` prints it and asks `exists` about
//! the rules we add to the kernel's own chains that do not jump to one of ours (those
//! need `iptables -C`, because `iptables-save` rewrites rules in its own spelling).

use std::collections::{BTreeMap, BTreeSet};

use crate::builder::RuleSet;
use crate::capture::CHAINS;

/// One table of `iptables-save` output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub chains: BTreeSet<String>,
    /// `-A CHAIN ...` lines as printed.
    pub rules: Vec<String>,
}

/// Parses `iptables-save` output into its tables.
pub fn parse_save(text: &str) -> BTreeMap<String, SavedTable> {
    let mut tables: BTreeMap<String, SavedTable> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('*') {
            current = Some(name.trim().to_owned());
            tables.entry(name.trim().to_owned()).or_default();
        } else if line == "COMMIT" {
            current = None;
        } else if let Some(t) = current.as_ref().and_then(|c| tables.get_mut(c)) {
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    t.chains.insert(name.to_owned());
                }
            } else if line.starts_with("-A ") {
                t.rules.push(line.to_owned());
            }
        }
    }
    tables
}

fn ours(chain: &str) -> bool {
    CHAINS.contains(&chain)
}

/// Whether a saved rule jumps (or goes) to one of our chains.
fn jumps_to_ours(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| (w[0] == "-j" || w[0] == "-g") && ours(w[1]))
}

/// The restore payload. `install` adds `rules` after removing what is there; without it
/// (cleanup) `rules` only tell which of our kernel-chain rules to look for.
pub fn payload(
    saved: &str,
    rules: &RuleSet,
    install: bool,
    exists: &mut dyn FnMut(&str, &str, &[String]) -> bool,
) -> String {
    let state = parse_save(saved);
    let new = rules.tables();
    let mut tables: BTreeSet<&str> = state
        .iter()
        .filter(|(_, t)| {
            t.chains.iter().any(|c| ours(c)) || t.rules.iter().any(|r| jumps_to_ours(r))
        })
        .map(|(n, _)| n.as_str())
        .collect();
    tables.extend(rules.built_in_rules().map(|(t, _, _)| t));
    if install {
        tables.extend(new.keys().copied());
    }
    let empty = SavedTable::default();
    let mut out = String::new();
    for table in tables {
        let old = state.get(table).unwrap_or(&empty);
        let mut lines: Vec<String> = Vec::new();
        // Our rules in the kernel's chains: jumps to our chains as saved, and the others
        // (RETURNs, marks) wherever `iptables -C` finds them.
        for r in old.rules.iter().filter(|r| jumps_to_ours(r)) {
            if let Some(rest) = r.strip_prefix("-A ") {
                let chain = rest.split_whitespace().next().unwrap_or_default();
                if !ours(chain) {
                    lines.push(format!("-D {rest}"));
                }
            }
        }
        for (t, chain, params) in rules.built_in_rules() {
            let jumps_ours = params.windows(2).any(|w| w[0] == "-j" && ours(&w[1]));
            if t == table && !jumps_ours && exists(table, chain, params) {
                lines.push(format!("-D {chain} {}", params.join(" ")));
            }
        }
        let existing: Vec<&str> = old
            .chains
            .iter()
            .map(String::as_str)
            .filter(|c| ours(c))
            .collect();
        let wanted: &[&str] = match (install, new.get(table)) {
            (true, Some(t)) => &t.chains,
            _ => &[],
        };
        lines.extend(existing.iter().map(|c| format!("-F {c}")));
        lines.extend(
            existing
                .iter()
                .filter(|c| !wanted.contains(c))
                .map(|c| format!("-X {c}")),
        );
        lines.extend(
            wanted
                .iter()
                .filter(|c| !existing.contains(c))
                .map(|c| format!("-N {c}")),
        );
        if install {
            if let Some(t) = new.get(table) {
                lines.extend(t.rules.iter().cloned());
            }
        }
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n"));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The tables a payload touches, from its `*table` lines.
pub fn touched_tables(payload: &str) -> Vec<&str> {
    payload
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .map(str::trim)
        .collect()
}

/// Only the named tables of `iptables-save` output, for a rollback; a table the output
/// lacks (never used) is restored empty.
pub fn select_tables(saved: &str, names: &[&str]) -> String {
    let present = parse_save(saved);
    let mut out: String = names
        .iter()
        .filter(|n| !present.contains_key(**n))
        .map(|n| format!("*{n}\nCOMMIT\n"))
        .collect();
    let mut keep = false;
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            keep = names.contains(&name.trim());
        }
        if keep && !line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        }
        if line.trim() == "COMMIT" {
            keep = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_OUTPUT_DNS - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j ISTIO_OUTPUT
-A OUTPUT -o eth9 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
COMMIT
*filter
:INPUT ACCEPT [0:0]
COMMIT
";

    fn rules() -> RuleSet {
        let mut r = RuleSet::default();
        r.append("nat", "OUTPUT", &["-o", "eth9", "-j", "RETURN"]);
        r.append("nat", "OUTPUT", &["-j", "ISTIO_OUTPUT"]);
        r.append(
            "nat",
            "ISTIO_OUTPUT",
            &["-d", "127.0.0.1/32", "-j", "RETURN"],
        );
        r
    }

    #[test]
    fn apply_replaces_what_an_earlier_run_left_in_one_transaction() {
        let mut asked = Vec::new();
        let p = payload(SAVED, &rules(), true, &mut |t, c, p| {
            asked.push(format!("{t} {c} {}", p.join(" ")));
            true
        });
        assert_eq!(
            p,
            "*nat
-D OUTPUT -j ISTIO_OUTPUT
-D OUTPUT -o eth9 -j RETURN
-F ISTIO_OUTPUT
-F ISTIO_OUTPUT_DNS
-X ISTIO_OUTPUT_DNS
-A OUTPUT -o eth9 -j RETURN
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
COMMIT
"
        );
        assert_eq!(
            asked,
            vec!["nat OUTPUT -o eth9 -j RETURN"],
            "only non-jump kernel-chain rules are checked"
        );
    }

    #[test]
    fn apply_on_a_clean_table_creates_chains() {
        let clean = "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        let p = payload(clean, &rules(), true, &mut |_, _, _| false);
        assert_eq!(
            p,
            "*nat\n-N ISTIO_OUTPUT\n-A OUTPUT -o eth9 -j RETURN\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn cleanup_removes_ours_and_leaves_the_rest() {
        let p = payload(SAVED, &rules(), false, &mut |_, _, _| true);
        assert_eq!(
            p,
            "*nat
-D OUTPUT -j ISTIO_OUTPUT
-D OUTPUT -o eth9 -j RETURN
-F ISTIO_OUTPUT
-F ISTIO_OUTPUT_DNS
-X ISTIO_OUTPUT
-X ISTIO_OUTPUT_DNS
COMMIT
"
        );
        assert!(!p.contains("KUBE"));
        let nothing = payload(
            "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
            &rules(),
            false,
            &mut |_, _, _| false,
        );
        assert_eq!(nothing, "", "nothing of ours: nothing to do");
    }

    #[test]
    fn rollback_selects_whole_tables() {
        assert_eq!(
            touched_tables("*nat\nCOMMIT\n*raw\nCOMMIT\n"),
            vec!["nat", "raw"]
        );
        let sel = select_tables(SAVED, &["filter"]);
        assert_eq!(sel, "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(
            select_tables("", &["raw"]),
            "*raw\nCOMMIT\n",
            "an unused table comes back empty"
        );
    }
}
