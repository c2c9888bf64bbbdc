//! Per-tool policy (`--tools-allow` / `--tools-deny`, rendered from the manifest's `tools:`): which
//! of the child's tools clients may see and call.
//!
//! Enforced at the two places a tool name crosses the bridge: every `tools/list` result from the
//! child is filtered in `upstream` before it is cached, counted or delivered (so no cache, schema
//! table or metric label ever holds a hidden tool), and a `tools/call` of a hidden tool is answered
//! by `app` with a JSON-RPC error without reaching the child. This module only decides; it keeps
//! no state and never talks to the child.

use std::collections::BTreeSet;

use serde_json::Value;

/// Which tools clients may use. Names are exact (no globs): a tool's name as its tools/list shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolPolicy {
    /// No policy: every tool.
    #[default]
    All,
    /// Only these tools.
    Allow(BTreeSet<String>),
    /// Every tool but these.
    Deny(BTreeSet<String>),
}

impl ToolPolicy {
    /// From the flags: at most one of the lists may be non-empty (clap enforces it too).
    /// Empty names (a stray comma in the environment form) are ignored.
    pub fn from_flags(allow: &[String], deny: &[String]) -> Result<Self, String> {
        let set = |names: &[String]| -> BTreeSet<String> {
            names.iter().filter(|n| !n.is_empty()).cloned().collect()
        };
        let (allow, deny) = (set(allow), set(deny));
        match (allow.is_empty(), deny.is_empty()) {
            (true, true) => Ok(Self::All),
            (false, true) => Ok(Self::Allow(allow)),
            (true, false) => Ok(Self::Deny(deny)),
            (false, false) => {
                Err("bridge: --tools-allow and --tools-deny exclude each other".into())
            }
        }
    }

    pub fn permits(&self, tool: &str) -> bool {
        match self {
            Self::All => true,
            Self::Allow(names) => names.contains(tool),
            Self::Deny(names) => !names.contains(tool),
        }
    }

    /// The deny list (its names are known `tool` label values of the refusal counter).
    pub fn denied(&self) -> impl Iterator<Item = &str> {
        match self {
            Self::Deny(names) => Some(names.iter().map(String::as_str)),
            _ => None,
        }
        .into_iter()
        .flatten()
    }

    /// Drop the tools clients may not use from a tools/list `result` (in place; one page of a
    /// paginated list is filtered the same way). Returns the names dropped.
    pub fn filter_list(&self, result: &mut Value) -> Vec<String> {
        if *self == Self::All {
            return Vec::new();
        }
        let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
            return Vec::new();
        };
        let mut hidden = Vec::new();
        tools.retain(|t| {
            // A tool without a string name cannot be called by name: leave it to the client.
            let Some(name) = t["name"].as_str() else {
                return true;
            };
            let keep = self.permits(name);
            if !keep {
                hidden.push(name.to_string());
            }
            keep
        });
        hidden
    }
}

/// The JSON-RPC error message of a refused `tools/call` (code −32602, docs/contracts.md).
pub fn refusal(tool: &str) -> String {
    format!("tool `{tool}` is not allowed on this service (manifest `tools` policy)")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_make_exactly_one_policy() {
        assert_eq!(ToolPolicy::from_flags(&[], &[]), Ok(ToolPolicy::All));
        let deny = ToolPolicy::from_flags(&[], &names(&["slow_echo"])).unwrap();
        assert!(deny.permits("echo") && !deny.permits("slow_echo"));
        assert_eq!(deny.denied().collect::<Vec<_>>(), ["slow_echo"]);
        let allow = ToolPolicy::from_flags(&names(&["echo"]), &[]).unwrap();
        assert!(allow.permits("echo") && !allow.permits("slow_echo"));
        assert_eq!(allow.denied().count(), 0);
        assert!(ToolPolicy::from_flags(&names(&["a"]), &names(&["b"])).is_err());
    }

    #[test]
    fn lists_are_filtered_in_place_and_other_fields_survive() {
        let mut page = json!({"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}},
            {"name": "slow_echo"},
            {"title": "nameless"},
        ], "nextCursor": "2"});
        let policy = ToolPolicy::Deny(["slow_echo".to_string()].into());
        assert_eq!(policy.filter_list(&mut page), ["slow_echo"]);
        assert_eq!(
            page,
            json!({"tools": [
                {"name": "echo", "inputSchema": {"type": "object"}},
                {"title": "nameless"},
            ], "nextCursor": "2"})
        );
        let mut page = json!({"tools": [{"name": "echo"}, {"name": "getenv"}]});
        let allow = ToolPolicy::Allow(["getenv".to_string()].into());
        assert_eq!(allow.filter_list(&mut page), ["echo"]);
        assert_eq!(page, json!({"tools": [{"name": "getenv"}]}));
        let mut odd = json!({"no": "tools"});
        assert!(allow.filter_list(&mut odd).is_empty());
        assert!(refusal("x").contains("tool `x` is not allowed on this service"));
    }
}
