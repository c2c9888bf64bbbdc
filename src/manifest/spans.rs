//! Where each node of a YAML document is: a tree of spans built from saphyr-parser's events.
//!
//! serde (serde_yaml_ng) gives us the typed model but forgets positions once a value is parsed, so
//! cross-field errors ("port 8501 is already used by `filesystem`") would have no line. This tree
//! keeps every key and value with its line and column, keeps duplicate keys (which a map would
//! silently collapse), and answers "where is `services.memory.limits.memory`?".

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

/// A 1-based line and column in the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    fn from_span(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    /// The text, and whether it was plain (unquoted), which decides if `8080` is a number.
    Scalar(String, bool),
    Sequence(Vec<Node>),
    /// Entries in document order, duplicates kept.
    Mapping(Vec<(Node, Node)>),
    Alias,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub at: Location,
    pub kind: NodeKind,
}

impl Node {
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.kind {
            NodeKind::Mapping(entries) => entries,
            _ => &[],
        }
    }

    /// The value under `key` in a mapping (the last one, as YAML loaders keep).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .rev()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(_, v)| v)
    }

    /// The key node for `key` in a mapping.
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .rev()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(k, _)| k)
    }

    /// Follow a path of mapping keys and sequence indexes. `Seg::Key` on the last segment with
    /// `want_key` returns the key node (for "unknown field" errors the key is the culprit).
    pub fn find(&self, path: &[Seg], want_key: bool) -> Option<&Node> {
        let mut node = self;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            node = match (seg, &node.kind) {
                (Seg::Key(k), NodeKind::Mapping(_)) if last && want_key => node.key(k)?,
                (Seg::Key(k), NodeKind::Mapping(_)) => node.get(k)?,
                (Seg::Index(i), NodeKind::Sequence(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The deepest node on `path` that exists: a best location even for a path into a default.
    /// For a path into something absent (a default), the key of the deepest mapping entry that
    /// is there, so the message points at the service or section to edit.
    pub fn locate(&self, path: &[Seg], want_key: bool) -> Location {
        if let Some(node) = self.find(path, want_key) {
            return node.at;
        }
        (1..path.len())
            .rev()
            .find_map(|n| self.find(&path[..n], true))
            .map_or(self.at, |n| n.at)
    }
}

impl Node {
    /// The document as a serde value, for typed deserialization. Later duplicate keys win, as YAML
    /// loaders do (duplicates are reported separately). Aliases are listed in `aliases`.
    pub fn to_value(&self, aliases: &mut Vec<Location>) -> serde_yaml_ng::Value {
        use serde_yaml_ng::Value;
        match &self.kind {
            NodeKind::Scalar(text, true) => {
                // Resolve plain scalars (numbers, booleans, null) exactly as serde_yaml_ng does.
                serde_yaml_ng::from_str::<Value>(text)
                    .unwrap_or_else(|_| Value::String(text.clone()))
            }
            NodeKind::Scalar(text, false) => Value::String(text.clone()),
            NodeKind::Sequence(items) => {
                Value::Sequence(items.iter().map(|n| n.to_value(aliases)).collect())
            }
            NodeKind::Mapping(entries) => {
                let mut map = serde_yaml_ng::Mapping::new();
                for (k, v) in entries {
                    map.insert(k.to_value(aliases), v.to_value(aliases));
                }
                Value::Mapping(map)
            }
            NodeKind::Alias => {
                aliases.push(self.at);
                Value::Null
            }
        }
    }
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Parse the first document of `source` into a span tree. `Ok(None)` for an empty document.
pub fn parse(source: &str) -> Result<Option<Node>, ScanError> {
    // Open containers: a partly built node plus, for mappings, a pending key.
    enum Open {
        Seq(Location, Vec<Node>),
        Map(Location, Vec<(Node, Node)>, Option<Node>),
    }
    fn attach(stack: &mut [Open], root: &mut Option<Node>, node: Node) {
        match stack.last_mut() {
            Some(Open::Seq(_, items)) => items.push(node),
            Some(Open::Map(_, entries, pending)) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
            None => {
                if root.is_none() {
                    *root = Some(node);
                }
            }
        }
    }

    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    for item in Parser::new_from_str(source) {
        let (event, span) = item?;
        let at = Location::from_span(&span);
        match event {
            Event::Scalar(value, style, ..) => attach(
                &mut stack,
                &mut root,
                Node {
                    at,
                    kind: NodeKind::Scalar(value.into_owned(), style == ScalarStyle::Plain),
                },
            ),
            Event::Alias(_) => attach(
                &mut stack,
                &mut root,
                Node {
                    at,
                    kind: NodeKind::Alias,
                },
            ),
            Event::SequenceStart(..) => stack.push(Open::Seq(at, Vec::new())),
            Event::MappingStart(..) => stack.push(Open::Map(at, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match stack.pop() {
                    Some(Open::Seq(at, items)) => Node {
                        at,
                        kind: NodeKind::Sequence(items),
                    },
                    Some(Open::Map(at, entries, _)) => Node {
                        at,
                        kind: NodeKind::Mapping(entries),
                    },
                    None => continue,
                };
                attach(&mut stack, &mut root, node);
            }
            Event::DocumentEnd => break,
            _ => {}
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }

    #[test]
    fn locates_nested_keys_values_and_sequence_items() {
        let src = "a:\n  b: 1\n  list:\n    - x\n    - y: 2\n";
        let root = parse(src).unwrap().unwrap();
        assert_eq!(
            root.find(&[key("a"), key("b")], false).unwrap().at,
            Location { line: 2, column: 6 }
        );
        assert_eq!(
            root.find(&[key("a"), key("b")], true).unwrap().at,
            Location { line: 2, column: 3 }
        );
        let y = root
            .find(&[key("a"), key("list"), Seg::Index(1), key("y")], false)
            .unwrap();
        assert_eq!((y.at.line, y.scalar()), (5, Some("2")));
        // A path into something absent resolves to the deepest node that exists.
        assert_eq!(
            root.locate(&[key("a"), key("missing"), key("deeper")], false)
                .line,
            1
        );
    }

    #[test]
    fn keeps_duplicate_keys() {
        let root = parse("s:\n  x: 1\n  x: 2\n").unwrap().unwrap();
        let s = root.get("s").unwrap();
        assert_eq!(s.entries().len(), 2);
        assert_eq!(s.get("x").unwrap().scalar(), Some("2"));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.marker().line() >= 1);
    }
}
