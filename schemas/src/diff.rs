//! What changes between two compiled configs, route by route and upstream by upstream:
//! entries added and removed by name, and changed ones field by field. `raftgate config
//! diff` prints it; the dashboard shows it between any two applied commits.

use serde::Serialize;
use serde_json::Value;

use crate::ConfigSnapshot;

/// What changed between two revisions, route by route and upstream by upstream.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiffView {
    pub from: String,
    pub to: String,
    pub upstreams: KindDiff,
    pub routes: KindDiff,
    pub certificates: KindDiff,
    pub security_policies: KindDiff,
    /// The HTTPS listener's `TLSPolicy`, as one entry named `listener` (its `name`
    /// among the fields; empty for the defaults).
    pub tls_policy: KindDiff,
}

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KindDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    pub name: String,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// `rules[0].backends[1].weight`
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl DiffView {
    pub fn is_empty(&self) -> bool {
        [&self.upstreams, &self.routes, &self.certificates, &self.security_policies, &self.tls_policy]
            .iter()
            .all(|k| k.added.is_empty() && k.removed.is_empty() && k.changed.is_empty())
    }
}

pub fn diff(from: &str, to: &str, a: &ConfigSnapshot, b: &ConfigSnapshot) -> DiffView {
    let named = |items: Vec<Value>| -> std::collections::BTreeMap<String, Value> {
        items.into_iter().map(|v| (v.get("name").and_then(Value::as_str).unwrap_or("").to_string(), v)).collect()
    };
    let kind = |x: Value, y: Value| {
        let (x, y) = (named(as_list(x)), named(as_list(y)));
        let mut d = KindDiff::default();
        for (name, before) in &x {
            match y.get(name) {
                None => d.removed.push(name.clone()),
                Some(after) if after != before => {
                    let mut fields = Vec::new();
                    walk("", Some(before), Some(after), &mut fields);
                    d.changed.push(Changed { name: name.clone(), fields });
                }
                Some(_) => {}
            }
        }
        d.added = y.keys().filter(|k| !x.contains_key(*k)).cloned().collect();
        d
    };
    DiffView {
        from: from.to_string(),
        to: to.to_string(),
        upstreams: kind(json(&a.upstreams), json(&b.upstreams)),
        routes: kind(json(&a.routes), json(&b.routes)),
        certificates: kind(json(&a.certificates), json(&b.certificates)),
        security_policies: kind(json(&a.security_policies), json(&b.security_policies)),
        tls_policy: kind(listener(&a.tls_policy), listener(&b.tls_policy)),
    }
}

/// The TLS policy as a one-entry list keyed `listener`, so a policy renamed, added or
/// removed shows as changed fields rather than as a different entry.
fn listener(p: &crate::snapshot::TlsPolicySpec) -> Value {
    let mut v = json(p);
    if let Value::Object(o) = &mut v {
        let name = o.remove("name").unwrap_or_default();
        o.insert("policy".into(), name);
        o.insert("name".into(), Value::String("listener".into()));
    }
    Value::Array(vec![v])
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// Records every leaf that differs between `a` and `b` under `path`.
fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if k == "name" && path.is_empty() {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(&p, x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                walk(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: path.to_string(),
            before: a.filter(|v| !v.is_null()).cloned(),
            after: b.filter(|v| !v.is_null()).cloned(),
        }),
        _ => {}
    }
}
