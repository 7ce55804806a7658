//! Incremental updates of `inet weft`: what lets a pod's label change touch a few set
//! elements instead of the ruleset.
//!
//! ```text
//!  render ──> objects with anonymous sets ──name_sets──> named sets + rules naming them
//!                                                             │ fingerprint (own chain)
//!  sync: last applied table ──element_diff──> Some(delete/add element …) ──> nft -j -f -
//!                                        └──> None (chains/rules differ) ──> full rewrite
//! ```
//!
//! [`name_sets`] runs on every rendered table, whatever part of the renderer emitted
//! the rules: every `match` whose right side is an anonymous set of plain elements and
//! whose left side has a type nft can name (addresses, protocol, ports, interface
//! names, marks and their concatenations) gets a named set `<chain>.<rule>.<statement>`
//! instead, so the rules no longer contain the elements. [`element_diff`] compares two
//! rendered tables: when they differ only in set elements, it returns the transaction
//! that deletes the removed and adds the new elements (one `nft -j -f -` run, atomic:
//! the kernel never sees a half-updated set), plus the new fingerprint rule; otherwise
//! `None` and the caller rewrites the table. Established connections keep their
//! conntrack entries either way; the incremental path also leaves chains, counters
//! and the other sets untouched.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use nftables::expr::{Expression, MetaKey, NamedExpression, Payload, SetItem};
use nftables::schema::SetFlag;
use nftables::schema::{
    Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Set, SetType, SetTypeValue,
};
use nftables::stmt::Statement;
use nftables::types::NfFamily;

use super::{FINGERPRINT_CHAIN, TABLE};

/// The nft type of a set looked up with `left`, if it has one this module knows.
fn key_type(left: &Expression<'static>) -> Option<Vec<SetType>> {
    match left {
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
            match (f.protocol.as_ref(), f.field.as_ref()) {
                ("ip", "saddr" | "daddr") => Some(vec![SetType::Ipv4Addr]),
                ("ip6", "saddr" | "daddr") => Some(vec![SetType::Ipv6Addr]),
                ("th" | "tcp" | "udp" | "sctp", "sport" | "dport") => Some(vec![SetType::InetService]),
                _ => None,
            }
        }
        Expression::Named(NamedExpression::Meta(m)) => match m.key {
            MetaKey::L4proto => Some(vec![SetType::InetProto]),
            MetaKey::Iifname | MetaKey::Oifname => Some(vec![SetType::Ifname]),
            MetaKey::Mark => Some(vec![SetType::Mark]),
            _ => None,
        },
        Expression::Named(NamedExpression::Concat(items)) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(key_type(i)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// True when `e` holds a prefix or a range (the set needs the `interval` flag).
fn has_interval(e: &Expression<'static>) -> bool {
    match e {
        Expression::Named(NamedExpression::Prefix(_)) | Expression::Range(_) => true,
        Expression::Named(NamedExpression::Concat(items)) => items.iter().any(has_interval),
        _ => false,
    }
}

/// Replaces the anonymous sets of match statements by named sets declared before the
/// chains (see the module docs). Objects other than rules are kept as they are.
pub fn name_sets(objects: Vec<NfListObject<'static>>) -> Vec<NfListObject<'static>> {
    let mut sets = Vec::new();
    let mut others = Vec::new();
    let mut rule_index: BTreeMap<String, usize> = BTreeMap::new();
    for object in objects {
        let NfListObject::Rule(mut rule) = object else {
            others.push(object);
            continue;
        };
        let index = {
            let n = rule_index.entry(rule.chain.to_string()).or_default();
            *n += 1;
            *n - 1
        };
        let mut expr = rule.expr.into_owned();
        for (j, statement) in expr.iter_mut().enumerate() {
            let Statement::Match(m) = statement else {
                continue;
            };
            let Expression::Named(NamedExpression::Set(items)) = &m.right else {
                continue;
            };
            if !items.iter().all(|i| matches!(i, SetItem::Element(_))) {
                continue;
            }
            let Some(types) = key_type(&m.left) else {
                continue;
            };
            let name = format!("{}.{index}.{j}", rule.chain);
            // The elements move from the rule into the set (no copy).
            let Expression::Named(NamedExpression::Set(items)) =
                std::mem::replace(&mut m.right, Expression::String(format!("@{name}").into()))
            else {
                unreachable!("checked above")
            };
            let elements: Vec<Expression<'static>> = items
                .into_iter()
                .filter_map(|i| match i {
                    SetItem::Element(e) => Some(e),
                    _ => None,
                })
                .collect();
            // Address and port sets are interval sets whatever their elements today, so
            // that a prefix or range appearing later is an element change, not a new set.
            let interval = elements.iter().any(has_interval)
                || types
                    .iter()
                    .any(|t| matches!(t, SetType::Ipv4Addr | SetType::Ipv6Addr | SetType::InetService));
            sets.push(NfListObject::Set(Box::new(Set {
                family: NfFamily::INet,
                table: TABLE.into(),
                name: name.clone().into(),
                handle: None,
                set_type: if types.len() == 1 {
                    SetTypeValue::Single(types[0])
                } else {
                    SetTypeValue::Concatenated(Cow::Owned(types))
                },
                policy: None,
                flags: interval.then(|| HashSet::from([SetFlag::Interval])),
                elem: Some(Cow::Owned(elements)),
                timeout: None,
                gc_interval: None,
                size: None,
                comment: None,
            })));
        }
        rule.expr = Cow::Owned(expr);
        others.push(NfListObject::Rule(rule));
    }
    sets.extend(others);
    sets
}

/// The elements of a set keyed by their JSON (expressions have no order of their own).
fn keyed<'a>(elements: &'a [Expression<'static>]) -> BTreeMap<String, &'a Expression<'static>> {
    elements
        .iter()
        .map(|e| (serde_json::to_string(e).unwrap_or_default(), e))
        .collect()
}

/// The objects of a table but the fingerprint chain's rule (which always differs).
fn skeleton<'t>(objects: &'t [NfListObject<'static>]) -> impl Iterator<Item = &'t NfListObject<'static>> {
    objects
        .iter()
        .filter(|o| !matches!(o, NfListObject::Rule(r) if r.chain == FINGERPRINT_CHAIN))
}

/// True when two sets are the same but for their elements.
fn same_declaration(a: &Set<'static>, b: &Set<'static>) -> bool {
    let Set {
        family,
        table,
        name,
        handle,
        set_type,
        policy,
        flags,
        elem: _,
        timeout,
        gc_interval,
        size,
        comment,
    } = a;
    *family == b.family
        && *table == b.table
        && *name == b.name
        && *handle == b.handle
        && *set_type == b.set_type
        && *policy == b.policy
        && *flags == b.flags
        && *timeout == b.timeout
        && *gc_interval == b.gc_interval
        && *size == b.size
        && *comment == b.comment
}

/// The commands that turn the live table `old` into `new` when they differ only in set
/// elements (and the fingerprint rule): deleted elements first, then added ones, then
/// the fingerprint chain flushed and refilled. `None` when chains, rules or set
/// declarations differ (the caller rewrites the table). Pure; only the sets whose
/// elements differ are looked at element by element.
pub fn element_diff(
    old: &[NfListObject<'static>],
    new: &[NfListObject<'static>],
) -> Option<Vec<NfObject<'static>>> {
    let element = |set: &str, elem: Vec<Expression<'static>>| {
        NfListObject::Element(Element {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: set.to_string().into(),
            elem: Cow::Owned(elem),
        })
    };
    let (mut old_objects, mut new_objects) = (skeleton(old), skeleton(new));
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    loop {
        let (a, b) = match (old_objects.next(), new_objects.next()) {
            (None, None) => break,
            (Some(a), Some(b)) => (a, b),
            _ => return None,
        };
        let (NfListObject::Set(a), NfListObject::Set(b)) = (a, b) else {
            if a != b {
                return None;
            }
            continue;
        };
        if !same_declaration(a, b) {
            return None;
        }
        let (old_set, new_set) = (
            a.elem.as_deref().unwrap_or_default(),
            b.elem.as_deref().unwrap_or_default(),
        );
        if old_set == new_set {
            continue;
        }
        let (old_set, new_set) = (keyed(old_set), keyed(new_set));
        let removed: Vec<_> = old_set
            .iter()
            .filter(|(k, _)| !new_set.contains_key(*k))
            .map(|(_, e)| (*e).clone())
            .collect();
        let added: Vec<_> = new_set
            .iter()
            .filter(|(k, _)| !old_set.contains_key(*k))
            .map(|(_, e)| (*e).clone())
            .collect();
        if !removed.is_empty() {
            deletes.push(NfObject::CmdObject(NfCmd::Delete(element(&b.name, removed))));
        }
        if !added.is_empty() {
            adds.push(NfObject::CmdObject(NfCmd::Add(element(&b.name, added))));
        }
    }
    let mut commands = deletes;
    commands.extend(adds);
    if let Some(chain) = new.iter().find_map(|o| match o {
        NfListObject::Chain(c) if c.name == FINGERPRINT_CHAIN => Some(c.clone()),
        _ => None,
    }) {
        commands.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Chain(chain))));
        commands.extend(new.iter().filter_map(|o| match o {
            NfListObject::Rule(r) if r.chain == FINGERPRINT_CHAIN => {
                Some(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(r.clone()))))
            }
            _ => None,
        }));
    }
    Some(commands)
}

/// The document of [`element_diff`]'s commands.
pub fn element_document(commands: Vec<NfObject<'static>>) -> Nftables<'static> {
    Nftables {
        objects: Cow::Owned(commands),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nftables::expr::{PayloadField, Prefix};
    use nftables::schema::{Chain, Rule};
    use nftables::stmt::{Match, Operator};

    use super::*;

    fn saddr() -> Expression<'static> {
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: "ip".into(),
            field: "saddr".into(),
        })))
    }

    fn element(text: &str) -> Expression<'static> {
        match text.split_once('/') {
            Some((addr, len)) => Expression::Named(NamedExpression::Prefix(Prefix {
                addr: Box::new(Expression::String(addr.to_string().into())),
                len: len.parse().unwrap(),
            })),
            None => Expression::String(text.to_string().into()),
        }
    }

    /// A table as the renderer emits it (before [`name_sets`]): chain `c` whose first
    /// rule returns for `peers`, `extra` more rules, and the fingerprint chain.
    fn table(peers: &[&str], extra: usize, fingerprint: &str) -> Vec<NfListObject<'static>> {
        let chain = |name: &str| {
            NfListObject::Chain(Chain {
                family: NfFamily::INet,
                table: TABLE.into(),
                name: name.to_string().into(),
                ..Default::default()
            })
        };
        let rule = |chain: &str, expr: Vec<Statement<'static>>, comment: Option<String>| {
            NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: TABLE.into(),
                chain: chain.to_string().into(),
                expr: Cow::Owned(expr),
                comment: comment.map(Cow::Owned),
                ..Default::default()
            })
        };
        let mut objects = vec![
            chain("c"),
            rule(
                "c",
                vec![
                    Statement::Match(Match {
                        left: saddr(),
                        right: Expression::Named(NamedExpression::Set(
                            peers.iter().map(|p| SetItem::Element(element(p))).collect(),
                        )),
                        op: Operator::EQ,
                    }),
                    Statement::Return(None),
                ],
                None,
            ),
        ];
        for _ in 0..extra {
            objects.push(rule("c", vec![Statement::Drop(None)], None));
        }
        let mut objects = name_sets(objects);
        objects.push(chain(FINGERPRINT_CHAIN));
        objects.push(rule(
            FINGERPRINT_CHAIN,
            vec![Statement::Return(None)],
            Some(format!("weft-nft {fingerprint}")),
        ));
        objects
    }

    fn json(v: &impl serde::Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn anonymous_sets_become_named_interval_sets() {
        let objects = table(&["10.0.0.1", "10.1.0.0/16"], 0, "f1");
        let NfListObject::Set(set) = &objects[0] else {
            panic!("the set comes first: {objects:?}");
        };
        assert_eq!(set.name, "c.0.0");
        assert_eq!(set.set_type, SetTypeValue::Single(SetType::Ipv4Addr));
        assert_eq!(set.flags, Some(HashSet::from([SetFlag::Interval])));
        assert_eq!(set.elem.as_ref().unwrap().len(), 2);
        let rules = json(&objects[2]);
        assert!(rules.contains(r#""right":"@c.0.0""#), "{rules}");
        assert!(!rules.contains("10.0.0.1"), "{rules}");
        // A lookup nft cannot type stays anonymous.
        let odd = name_sets(vec![NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: TABLE.into(),
            chain: "c".into(),
            expr: Cow::Owned(vec![Statement::Match(Match {
                left: Expression::Number(1),
                right: Expression::Named(NamedExpression::Set(vec![SetItem::Element(element("10.0.0.1"))])),
                op: Operator::EQ,
            })]),
            ..Default::default()
        })]);
        assert_eq!(odd.len(), 1);
        assert!(json(&odd).contains("10.0.0.1"));
    }

    #[test]
    fn element_only_changes_become_element_commands() {
        let old = table(&["10.0.0.1", "10.0.0.2", "10.1.0.0/16"], 1, "f1");
        let new = table(&["10.0.0.2", "10.0.0.3", "10.1.0.0/16"], 1, "f2");
        let commands = element_diff(&old, &new).expect("only elements differ");
        let text = json(&commands);
        assert_eq!(commands.len(), 4, "{text}");
        // Deletes before adds, each naming only what changed; then the fingerprint.
        assert!(
            text.starts_with(
                r#"[{"delete":{"element":{"family":"inet","table":"weft","name":"c.0.0","elem":["10.0.0.1"]}}},{"add":{"element":{"family":"inet","table":"weft","name":"c.0.0","elem":["10.0.0.3"]}}},{"flush":{"chain":"#
            ),
            "{text}"
        );
        assert!(text.ends_with(r#""comment":"weft-nft f2"}}}]"#), "{text}");
        assert!(!text.contains("10.0.0.2") && !text.contains("10.1.0.0"), "{text}");
        // The same table again: nothing but the fingerprint.
        assert_eq!(element_diff(&new, &new).unwrap().len(), 2);
        // A prefix among plain addresses is still an element change.
        assert!(element_diff(&old, &table(&["10.0.0.0/24"], 1, "f3")).is_some());
    }

    #[test]
    fn structural_changes_rewrite_the_table() {
        let old = table(&["10.0.0.1"], 1, "f1");
        // Another rule.
        assert_eq!(element_diff(&old, &table(&["10.0.0.1"], 2, "f2")), None);
        // A set that appears or disappears with its rule.
        let mut fewer = old.clone();
        fewer.retain(|o| !matches!(o, NfListObject::Set(_)));
        assert_eq!(element_diff(&old, &fewer), None);
    }
}
