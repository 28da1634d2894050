//! Field paths (`faults[1].target`) and their positions in a TOML source.
//!
//! Validation works on the typed [`Scenario`](crate::Scenario) and names problems by
//! [`FieldPath`]; [`locate`] maps a path back to a line and column through toml_edit's spanned
//! document, and [`path_at`] does the reverse for serde errors, which only carry a byte span.
//! One generic walk for every field: nothing here knows the scenario format.

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Value};

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An array element (0-based).
    Index(usize),
}

/// A path to a field of a scenario file, printed as `faults[1].target`.
///
/// Keys that are not bare TOML keys are printed quoted: `components[0].env."A B"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The document root (prints as the empty string).
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        FieldPath(segments)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    /// Parses the printed form back; `None` on malformed input (unclosed quote or bracket).
    pub fn parse(text: &str) -> Option<Self> {
        let mut segments = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '.' => {
                    chars.next();
                }
                '[' => {
                    chars.next();
                    let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
                    segments.push(Segment::Index(digits.parse().ok()?));
                }
                '"' => {
                    chars.next();
                    let mut key = String::new();
                    loop {
                        match chars.next()? {
                            '"' => break,
                            '\\' => key.push(chars.next()?),
                            other => key.push(other),
                        }
                    }
                    segments.push(Segment::Key(key));
                }
                _ => {
                    let mut key = String::new();
                    while let Some(&c) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        key.push(c);
                        chars.next();
                    }
                    segments.push(Segment::Key(key));
                }
            }
        }
        Some(FieldPath(segments))
    }

    /// True for the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

impl LineCol {
    /// Line and column of a byte offset in `src` (clamped to the end of `src`).
    pub fn of_offset(src: &str, offset: usize) -> Self {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        LineCol {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// Where `path` is written in `src`: the value of the deepest existing part of the path.
///
/// A missing field is reported at its table (`[[faults]]` header), so a "missing" or "required"
/// problem still points somewhere useful. `None` only when `src` is not valid TOML.
pub fn locate(src: &str, path: &FieldPath) -> Option<LineCol> {
    let doc = ImDocument::parse(src).ok()?;
    Some(LineCol::of_offset(src, locate_offset(&doc, path)))
}

/// [`locate`] on an already parsed document, as a byte offset.
pub(crate) fn locate_offset(doc: &ImDocument<&str>, path: &FieldPath) -> usize {
    let mut item = doc.as_item();
    let mut best = 0;
    for segment in &path.0 {
        let Some((key_span, child)) = child(item, segment) else {
            break;
        };
        if let Some(span) = child.span().or(key_span) {
            best = span.start;
        }
        item = child;
    }
    best
}

/// The path of the deepest key or value whose span holds `offset`; the root if none does.
pub(crate) fn path_at(doc: &ImDocument<&str>, offset: usize) -> FieldPath {
    let mut path = FieldPath::root();
    descend(doc.as_item(), offset, &mut path);
    path
}

/// Extends `path` into the child of `item` that holds `offset`; true if one did.
fn descend(item: &Item, offset: usize, path: &mut FieldPath) -> bool {
    for segment in segments(item) {
        let Some((key_span, child_item)) = child(item, &segment) else {
            continue;
        };
        let in_key = key_span.as_ref().is_some_and(|s| holds(s, offset));
        let in_value = child_item.span().as_ref().is_some_and(|s| holds(s, offset));
        if in_key || in_value {
            path.0.push(segment);
            if in_value {
                descend(child_item, offset, path);
            }
            return true;
        }
        // Implicit and dotted tables have no span of their own, and a table's span does
        // not hold its sub-tables written later (`[[workload.clients]]` after
        // `[workload]`): look inside them.
        if child_item.span().is_none() || child_item.is_table() {
            path.0.push(segment);
            if descend(child_item, offset, path) {
                return true;
            }
            path.0.pop();
        }
    }
    false
}

/// The first key named `name` under `path` (document order, depth first), with the offset of
/// the key. serde names an unknown field but may point at its enclosing table or array.
pub(crate) fn find_key(
    doc: &ImDocument<&str>,
    path: &FieldPath,
    name: &str,
) -> Option<(FieldPath, usize)> {
    let mut item = doc.as_item();
    for segment in &path.0 {
        item = child(item, segment)?.1;
    }
    let mut path = path.clone();
    find_key_in(item, name, &mut path)
}

fn find_key_in(item: &Item, name: &str, path: &mut FieldPath) -> Option<(FieldPath, usize)> {
    for segment in segments(item) {
        let Some((key_span, child_item)) = child(item, &segment) else {
            continue;
        };
        let is_match = matches!(&segment, Segment::Key(k) if k == name);
        path.0.push(segment);
        if is_match {
            if let Some(span) = key_span.or_else(|| child_item.span()) {
                return Some((path.clone(), span.start));
            }
        }
        if let Some(found) = find_key_in(child_item, name, path) {
            return Some(found);
        }
        path.0.pop();
    }
    None
}

fn holds(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The segments under `item`, in document order.
fn segments(item: &Item) -> Vec<Segment> {
    match item {
        Item::Table(t) => t.iter().map(|(k, _)| Segment::Key(k.to_owned())).collect(),
        Item::Value(Value::InlineTable(t)) => {
            t.iter().map(|(k, _)| Segment::Key(k.to_owned())).collect()
        }
        Item::ArrayOfTables(a) => (0..a.len()).map(Segment::Index).collect(),
        Item::Value(Value::Array(a)) => (0..a.len()).map(Segment::Index).collect(),
        _ => Vec::new(),
    }
}

/// The child of `item` at `segment`, with the span of its key when it has one.
fn child<'a>(item: &'a Item, segment: &Segment) -> Option<(Option<Range<usize>>, &'a Item)> {
    match segment {
        Segment::Index(i) => item.get(*i).map(|child| (None, child)),
        Segment::Key(k) => {
            let key_span = match item {
                Item::Table(t) => t.key(k).and_then(|key| key.span()),
                Item::Value(Value::InlineTable(t)) => t.key(k).and_then(|key| key.span()),
                _ => None,
            };
            item.get(k.as_str()).map(|child| (key_span, child))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"name = "x"

[workload]
target = "server"
requests = [{ kind = "infer", model = "m" }]

[[faults]]
at = "1s"

[[faults]]
at = "2s"
target = "sever"
"#;

    #[test]
    fn paths_print_and_parse_back() {
        let path = FieldPath::root()
            .key("faults")
            .index(1)
            .key("target")
            .key("a b");
        assert_eq!(path.to_string(), r#"faults[1].target."a b""#);
        assert_eq!(FieldPath::parse(&path.to_string()), Some(path));
    }

    #[test]
    fn locate_points_at_the_value() {
        let path = FieldPath::parse("faults[1].target").expect("valid path");
        assert_eq!(
            locate(SRC, &path),
            Some(LineCol {
                line: 12,
                column: 10
            })
        );
        let path = FieldPath::parse("workload.requests[0].model").expect("valid path");
        assert_eq!(
            locate(SRC, &path),
            Some(LineCol {
                line: 5,
                column: 39
            })
        );
    }

    #[test]
    fn locate_falls_back_to_the_table_of_a_missing_field() {
        let path = FieldPath::parse("faults[0].target").expect("valid path");
        assert_eq!(locate(SRC, &path), Some(LineCol { line: 7, column: 1 }));
    }

    #[test]
    fn path_at_finds_fields_of_sub_tables_written_after_their_table() {
        let src = format!(
            "{SRC}\n[[workload.clients]]\nregion = \"us\"\n\n[[workload.clients]]\nrate = 1\n"
        );
        let doc = ImDocument::parse(src.as_str()).expect("valid toml");
        let offset = src.find("rate").expect("in source");
        assert_eq!(
            path_at(&doc, offset).to_string(),
            "workload.clients[1].rate"
        );
    }

    #[test]
    fn path_at_finds_the_deepest_field() {
        let doc = ImDocument::parse(SRC).expect("valid toml");
        let offset = SRC.find("sever").expect("in source");
        assert_eq!(path_at(&doc, offset).to_string(), "faults[1].target");
        let offset = SRC.find("\"m\"").expect("in source");
        assert_eq!(
            path_at(&doc, offset).to_string(),
            "workload.requests[0].model"
        );
    }
}
