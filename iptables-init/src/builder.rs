//! Rules as istio-iptables builds them, and their two renderings: `iptables` command
//! arguments (`-t nat -N CHAIN`, `-t nat -A CHAIN ...`) and the `iptables-restore --noflush`
//! payload (`* nat`, `-N CHAIN`, `-A CHAIN ...`, `COMMIT`, tables in name order).
//!
//! Chains other than the kernel's built-in ones are created (`-N`) before any rule, in the
//! order they first appear; the restore form also creates chains that are only jumped to.

use std::collections::{BTreeMap, HashSet};

/// The kernel's own chains and the standard targets, which are never created.
const BUILT_IN: [&str; 17] = [
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "RETURN",
    "ACCEPT",
    "DROP",
    "REJECT",
    "REDIRECT",
    "TPROXY",
    "MARK",
    "CONNMARK",
    "CT",
    "LOG",
    "NFLOG",
    "MASQUERADE",
];

/// Stands for the address of the rule's IP family in a rule added with
/// [`Builder::append_versioned`].
pub const VERSIONED: &str = "\u{0}ip";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Append,
    Insert(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    table: String,
    chain: String,
    op: Op,
    params: Vec<String>,
}

impl Rule {
    /// `-A CHAIN params` or `-I CHAIN N params`.
    fn spec(&self) -> String {
        let mut s = match self.op {
            Op::Append => format!("-A {}", self.chain),
            Op::Insert(n) => format!("-I {} {n}", self.chain),
        };
        for p in &self.params {
            s.push(' ');
            s.push_str(p);
        }
        s
    }

    /// The chain this rule jumps to, if it ends in `-j CHAIN`.
    fn jump(&self) -> Option<&str> {
        match self.params.as_slice() {
            [.., j, target] if j == "-j" => Some(target),
            _ => None,
        }
    }
}

/// A kernel chain or standard target, never created.
pub fn built_in(chain: &str) -> bool {
    BUILT_IN.contains(&chain)
}

/// The rules of one IP family, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn append(&mut self, table: &str, chain: &str, params: &[&str]) {
        self.push(table, chain, Op::Append, params);
    }

    pub fn insert(&mut self, table: &str, chain: &str, position: u32, params: &[&str]) {
        self.push(table, chain, Op::Insert(position), params);
    }

    fn push(&mut self, table: &str, chain: &str, op: Op, params: &[&str]) {
        self.rules.push(Rule {
            table: table.to_owned(),
            chain: chain.to_owned(),
            op,
            params: params.iter().map(|p| (*p).to_owned()).collect(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// As `iptables` arguments, one command a line: chain creations, then the rules.
    pub fn commands(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in &self.rules {
            if !built_in(&r.chain) && seen.insert((r.table.as_str(), r.chain.as_str())) {
                out.push(format!("-t {} -N {}", r.table, r.chain));
            }
        }
        out.extend(
            self.rules
                .iter()
                .map(|r| format!("-t {} {}", r.table, r.spec())),
        );
        out
    }

    /// Per table (in name order): the chains to create (those with rules, then those
    /// only jumped to) and the rules as `-A`/`-I` lines.
    pub fn tables(&self) -> BTreeMap<&str, Table<'_>> {
        let mut tables: BTreeMap<&str, Table<'_>> = BTreeMap::new();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let targets = self
            .rules
            .iter()
            .map(|r| (r.table.as_str(), r.chain.as_str()))
            .chain(
                self.rules
                    .iter()
                    .filter_map(|r| Some((r.table.as_str(), r.jump()?))),
            );
        for (table, chain) in targets {
            if !built_in(chain) && seen.insert((table, chain)) {
                tables.entry(table).or_default().chains.push(chain);
            }
        }
        for r in &self.rules {
            tables.entry(&r.table).or_default().rules.push(r.spec());
        }
        tables
    }

    /// Rules added to the kernel's own chains (table, chain, parameters), which
    /// cleanup must delete one by one.
    pub fn built_in_rules(&self) -> impl Iterator<Item = (&str, &str, &[String])> {
        self.rules
            .iter()
            .filter(|r| built_in(&r.chain))
            .map(|r| (r.table.as_str(), r.chain.as_str(), r.params.as_slice()))
    }

    /// The `iptables-restore --noflush` payload: per table (in name order), the chains
    /// to create, the rules, `COMMIT`.
    pub fn restore(&self) -> String {
        let mut out = String::new();
        for (table, t) in self.tables() {
            out.push_str(&format!("* {table}\n"));
            for c in t.chains {
                out.push_str(&format!("-N {c}\n"));
            }
            for r in t.rules {
                out.push_str(&r);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// One table's part of a rule set.
#[derive(Debug, Default)]
pub struct Table<'a> {
    /// Chains to create, in order.
    pub chains: Vec<&'a str>,
    /// `-A CHAIN ...` / `-I CHAIN N ...` lines.
    pub rules: Vec<String>,
}

/// IPv4 rules, and IPv6 rules when IPv6 is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub v4: RuleSet,
    pub v6: RuleSet,
    ipv6: bool,
}

impl Builder {
    pub fn new(ipv6: bool) -> Self {
        Builder {
            v4: RuleSet::default(),
            v6: RuleSet::default(),
            ipv6,
        }
    }

    /// Appends to both families (IPv6 only when enabled).
    pub fn append(&mut self, table: &str, chain: &str, params: &[&str]) {
        self.v4.append(table, chain, params);
        if self.ipv6 {
            self.v6.append(table, chain, params);
        }
    }

    /// Inserts at `position` in both families (IPv6 only when enabled).
    pub fn insert(&mut self, table: &str, chain: &str, position: u32, params: &[&str]) {
        self.v4.insert(table, chain, position, params);
        if self.ipv6 {
            self.v6.insert(table, chain, position, params);
        }
    }

    /// Whether IPv6 rules are made.
    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    /// Appends to the IPv6 rules only, when IPv6 is enabled.
    pub fn append_v6(&mut self, table: &str, chain: &str, params: &[&str]) {
        if self.ipv6 {
            self.v6.append(table, chain, params);
        }
    }

    /// Inserts into the IPv6 rules only, when IPv6 is enabled.
    pub fn insert_v6(&mut self, table: &str, chain: &str, position: u32, params: &[&str]) {
        if self.ipv6 {
            self.v6.insert(table, chain, position, params);
        }
    }

    /// Appends to both families with [`VERSIONED`] replaced by `v4` or `v6`.
    pub fn append_versioned(
        &mut self,
        v4: &str,
        v6: &str,
        table: &str,
        chain: &str,
        params: &[&str],
    ) {
        let with = |addr: &str| -> Vec<String> {
            params
                .iter()
                .map(|p| if *p == VERSIONED { addr } else { p }.to_owned())
                .collect()
        };
        let v4p = with(v4);
        self.v4.append(
            table,
            chain,
            &v4p.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        if self.ipv6 {
            let v6p = with(v6);
            self.v6.append(
                table,
                chain,
                &v6p.iter().map(String::as_str).collect::<Vec<_>>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/istio-iptables/builder")
            .join(format!("{name}.golden"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn check(name: &str, rules: &RuleSet) {
        let commands: String = rules.commands().iter().map(|c| format!("{c}\n")).collect();
        assert_eq!(commands, golden(name), "{name}");
        assert_eq!(
            rules.restore(),
            golden(&format!("{name}-restore")),
            "{name}-restore"
        );
    }

    /// Istio's builder goldens, for the same sequences of appends and inserts; each
    /// shared golden holds for either family.
    #[test]
    fn builder_goldens() {
        type Steps = &'static [(
            &'static str,
            &'static str,
            Option<u32>,
            &'static [&'static str],
        )];
        let cases: [(&str, Steps); 5] = [
            (
                "insert-single",
                &[("table", "chain", Some(2), &["-f", "foo", "-b", "bar"])],
            ),
            (
                "append-single",
                &[("table", "chain", None, &["-f", "foo", "-b", "bar"])],
            ),
            (
                "append-multi",
                &[
                    ("table", "chain", None, &["-f", "foo", "-b", "bar"]),
                    ("table", "chain", None, &["-f", "fu", "-b", "bar"]),
                    ("table", "chain", None, &["-f", "foo", "-b", "baz"]),
                ],
            ),
            (
                "insert-multi",
                &[
                    ("table", "chain", Some(1), &["-f", "foo", "-b", "bar"]),
                    ("table", "chain", Some(2), &["-f", "foo", "-b", "baaz"]),
                    ("table", "chain", Some(3), &["-f", "foo", "-b", "baz"]),
                ],
            ),
            (
                "append-insert-multi",
                &[
                    ("table", "chain", None, &["-f", "foo", "-b", "bar"]),
                    ("table", "chain", Some(2), &["-f", "foo", "-b", "bar"]),
                    ("table", "chain", None, &["-f", "foo", "-b", "baz"]),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut b = Builder::new(true);
            for (table, chain, pos, params) in steps {
                match pos {
                    Some(p) => b.insert(table, chain, *p, params),
                    None => b.append(table, chain, params),
                }
            }
            check(name, &b.v4);
            check(name, &b.v6);
        }
        // Families built apart: their own goldens.
        let mut b = Builder::new(true);
        b.v4.append("table", "chain", &["-f", "foo", "-b", "bar"]);
        b.v4.insert("table", "chain", 2, &["-f", "foo", "-b", "bar"]);
        b.v4.append("table", "chain", &["-f", "foo", "-b", "baz"]);
        b.v6.append("table", "chain", &["-f", "foo", "-b", "bar"]);
        b.v6.insert("table", "chain", 2, &["-f", "foo", "-b", "bar"]);
        b.v6.insert("table", "chain", 1, &["-f", "foo", "-b", "bar"]);
        b.v4.append("nat", "PREROUTING", &["-f", "foo", "-b", "bar"]);
        check("multi-rules-new-chain-v4", &b.v4);
        check("multi-rules-new-chain-v6", &b.v6);
    }

    #[test]
    fn jump_targets_are_created_and_versioned_rules_take_their_family() {
        let mut b = Builder::new(true);
        b.append("nat", "OUTPUT", &["-j", "ISTIO_OUTPUT"]);
        b.append_versioned(
            "127.0.0.6/32",
            "::6/128",
            "nat",
            "ISTIO_OUTPUT",
            &["-o", "lo", "-s", VERSIONED, "-j", "RETURN"],
        );
        assert_eq!(
            b.v4.restore(),
            "* nat\n-N ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN\nCOMMIT\n"
        );
        assert!(b.v6.restore().contains("-s ::6/128"));
        let v4_only = Builder::new(false);
        assert!(v4_only.v6.is_empty());
    }
}
