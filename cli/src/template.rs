//! `--format` templates in the style `docker images --format` takes:
//! `{{.Field}}` actions between literal text, `\t` and `\n` escapes, and a
//! `table` prefix that adds a header row and aligns tab-separated columns.
//!
//! A template is rendered against one JSON object per row (the same fields
//! the command prints with `--format json`, named as Docker names them).
//! Actions:
//!
//! | action | prints |
//! |---|---|
//! | `{{.}}` | the whole row, as JSON |
//! | `{{.A.B}}` | a field (objects nest); text as it is, a list as `[a b]`, an object as JSON |
//! | `{{json .A}}` | a field as JSON |
//! | `{{upper .A}}`, `{{lower .A}}` | a field's text in upper or lower case |
//! | `{{len .A}}` | how many items a list or object holds, or characters a text |
//! | `{{join .A ", "}}` | a list's items with a separator between them |
//! | `{{truncate .A 12}}` | a field's text cut to that many characters |
//!
//! `{{-` and `-}}` trim the white space before and after an action, as in
//! Go. An unknown field is an error that lists the fields there are.

use serde_json::Value;

/// A parsed `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// Whether a header row comes first and columns are aligned.
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Action(Action),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    func: Func,
    /// Field names from the row down; empty for `.`.
    path: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Func {
    Value,
    Json,
    Upper,
    Lower,
    Len,
    Join(String),
    Truncate(usize),
}

/// Why a template cannot be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// The text is not a template this module reads.
    #[error("{0}")]
    Parse(String),
    /// A row has no such field.
    #[error("no field {field:?} here; the fields are: {fields}")]
    NoField {
        /// The field asked for.
        field: String,
        /// The fields the object has, comma-separated.
        fields: String,
    },
    /// A function was given a value it does not apply to.
    #[error("{func} cannot be applied to {what}")]
    Type {
        /// The function.
        func: &'static str,
        /// What it was given.
        what: &'static str,
    },
}

impl Template {
    /// Parses a template; `table` alone means `default` in table form.
    pub(crate) fn parse(text: &str, default: &str) -> Result<Self, TemplateError> {
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let (table, body) = match text.strip_prefix("table") {
            Some("") => (true, default.to_owned()),
            Some(rest) if rest.starts_with([' ', '\t']) => (true, rest[1..].to_owned()),
            _ => (false, text),
        };
        Ok(Self {
            table,
            parts: parse_parts(&body)?,
        })
    }

    /// Whether the text is a template rather than a format name.
    pub(crate) fn looks_like(text: &str) -> bool {
        text.contains("{{") || text == "table" || text.starts_with("table ")
    }

    /// Renders the rows: one line (or more, when the template writes
    /// newlines) per row, after a header row in table form, with
    /// tab-separated columns aligned.
    pub(crate) fn render(
        &self,
        rows: &[Value],
        header: impl Fn(&str) -> String,
    ) -> Result<Vec<String>, TemplateError> {
        let mut text = String::new();
        if self.table {
            text.push_str(&self.header(&header));
            text.push('\n');
        }
        for row in rows {
            text.push_str(&self.render_one(row)?);
            text.push('\n');
        }
        let lines: Vec<&str> = text.lines().collect();
        Ok(if self.table {
            align(&lines)
        } else {
            lines.into_iter().map(str::to_owned).collect()
        })
    }

    fn render_one(&self, row: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(a) => out.push_str(&a.apply(row)?),
            }
        }
        Ok(out)
    }

    fn header(&self, name: &impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(a) => {
                    if let Some(last) = a.path.last() {
                        out.push_str(&name(last));
                    }
                }
            }
        }
        out
    }
}

/// A header from a field name: `CreatedAt` → `CREATED AT`.
pub(crate) fn default_header(field: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let prev_lower = i > 0 && chars[i - 1].is_lowercase();
        if i > 0 && c.is_uppercase() && (prev_lower || next_lower) {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// Pads tab-separated cells so that columns line up, three spaces apart.
fn align(lines: &[&str]) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for line in lines {
        for (i, cell) in line.split('\t').enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    lines
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.trim_end().to_owned()
        })
        .collect()
}

fn parse_parts(body: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = body;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            TemplateError::Parse(format!(
                "unclosed action at character {} (each {{{{ needs a }}}})",
                body.len() - rest.len() + open + 1
            ))
        })?;
        let mut inner = &after[..close];
        if let Some(stripped) = inner.strip_prefix('-') {
            text = text.trim_end();
            inner = stripped;
        }
        trim_next = inner.ends_with('-') && inner.len() > 1;
        if trim_next {
            inner = &inner[..inner.len() - 1];
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.to_owned()));
        }
        parts.push(Part::Action(Action::parse(inner.trim())?));
        rest = &after[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if text.contains("}}") {
        return Err(TemplateError::Parse("}} without an opening {{".to_owned()));
    }
    if !text.is_empty() {
        parts.push(Part::Text(text.to_owned()));
    }
    Ok(parts)
}

impl Action {
    fn parse(text: &str) -> Result<Self, TemplateError> {
        let words = words(text)?;
        let bad_args = |name: &str, usage: &str| {
            TemplateError::Parse(format!("{name} takes {usage}, in {{{{{text}}}}}"))
        };
        let (func, path) = match words.as_slice() {
            [path] if path.starts_with('.') => (Func::Value, path),
            [f, path] if f == "json" => (Func::Json, path),
            [f, path] if f == "upper" => (Func::Upper, path),
            [f, path] if f == "lower" => (Func::Lower, path),
            [f, path] if f == "len" => (Func::Len, path),
            [f, path, sep] if f == "join" => (Func::Join(sep.clone()), path),
            [f, path, n] if f == "truncate" => {
                let n = n
                    .parse()
                    .map_err(|_| bad_args("truncate", "a field and a number"))?;
                (Func::Truncate(n), path)
            }
            [f, ..] if f == "join" => return Err(bad_args("join", "a field and a separator")),
            [f, ..] if f == "truncate" => {
                return Err(bad_args("truncate", "a field and a number"));
            }
            [f, ..] if ["json", "upper", "lower", "len"].contains(&f.as_str()) => {
                return Err(bad_args(f, "one field"));
            }
            [] => return Err(TemplateError::Parse("empty action {{}}".to_owned())),
            [f, ..] => {
                return Err(TemplateError::Parse(format!(
                    "unknown action {f:?} in {{{{{text}}}}}: use .Field, or one of json, upper, lower, len, join, truncate"
                )));
            }
        };
        Ok(Self {
            func,
            path: parse_path(path)?,
        })
    }

    fn apply(&self, row: &Value) -> Result<String, TemplateError> {
        let mut value = row;
        for field in &self.path {
            value = match value {
                Value::Object(map) => map.get(field).ok_or_else(|| TemplateError::NoField {
                    field: field.clone(),
                    fields: map.keys().cloned().collect::<Vec<_>>().join(", "),
                })?,
                _ => {
                    return Err(TemplateError::NoField {
                        field: field.clone(),
                        fields: "none (not an object)".to_owned(),
                    });
                }
            };
        }
        Ok(match &self.func {
            Func::Value if self.path.is_empty() => value.to_string(),
            Func::Value => text(value),
            Func::Json => value.to_string(),
            Func::Upper => text(value).to_uppercase(),
            Func::Lower => text(value).to_lowercase(),
            Func::Len => match value {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.chars().count(),
                _ => {
                    return Err(TemplateError::Type {
                        func: "len",
                        what: kind(value),
                    });
                }
            }
            .to_string(),
            Func::Join(sep) => match value {
                Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(sep),
                _ => {
                    return Err(TemplateError::Type {
                        func: "join",
                        what: kind(value),
                    });
                }
            },
            Func::Truncate(n) => text(value).chars().take(*n).collect(),
        })
    }
}

/// A value as text: strings as they are, null as nothing, lists as
/// `[a b]`, objects as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(" "))
        }
        other => other.to_string(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_path(text: &str) -> Result<Vec<String>, TemplateError> {
    let Some(rest) = text.strip_prefix('.') else {
        return Err(TemplateError::Parse(format!(
            "expected a field such as .ID, found {text:?}"
        )));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('.')
        .map(|name| {
            if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                Ok(name.to_owned())
            } else {
                Err(TemplateError::Parse(format!(
                    "{text:?} is not a field name (letters, digits and _ after each dot)"
                )))
            }
        })
        .collect()
}

/// Splits an action into words; a double-quoted word may hold spaces and
/// the escapes `\"`, `\\`, `\t` and `\n`.
fn words(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('t') => word.push('\t'),
                        Some('n') => word.push('\n'),
                        Some(other) => word.push(other),
                        None => break,
                    },
                    Some(other) => word.push(other),
                    None => {
                        return Err(TemplateError::Parse(format!(
                            "unterminated text in {{{{{text}}}}}"
                        )));
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(template: &str, rows: &[Value]) -> Result<Vec<String>, TemplateError> {
        Template::parse(template, "{{.ID}}")?.render(rows, default_header)
    }

    #[test]
    fn fields_escapes_and_functions() {
        let row = json!({"ID": "abc", "Tags": ["a", "b"], "Config": {"Env": ["X=1"]}, "N": 3});
        let rows = [row];
        assert_eq!(render("{{.ID}}\\t{{.N}}", &rows).unwrap(), ["abc\t3"]);
        assert_eq!(render("{{.Config.Env}}", &rows).unwrap(), ["[X=1]"]);
        assert_eq!(render("{{json .Tags}}", &rows).unwrap(), [r#"["a","b"]"#]);
        assert_eq!(render(r#"{{join .Tags ", "}}"#, &rows).unwrap(), ["a, b"]);
        assert_eq!(
            render("{{upper .ID}}/{{len .Tags}}", &rows).unwrap(),
            ["ABC/2"]
        );
        assert_eq!(render("{{truncate .ID 2}}", &rows).unwrap(), ["ab"]);
        assert_eq!(render("x {{- .ID -}} y", &rows).unwrap(), ["xabcy"]);
    }

    #[test]
    fn table_form_adds_headers_and_aligns() {
        let rows = [
            json!({"ID": "a", "CreatedAt": "long text"}),
            json!({"ID": "abcdef", "CreatedAt": "t"}),
        ];
        let lines = render("table {{.ID}}\\t{{.CreatedAt}}", &rows).unwrap();
        assert_eq!(
            lines,
            ["ID       CREATED AT", "a        long text", "abcdef   t"]
        );
        let lines = render("table", &rows).unwrap();
        assert_eq!(lines, ["ID", "a", "abcdef"]);
    }

    #[test]
    fn mistakes_are_named() {
        let rows = [json!({"ID": "a", "Size": 1})];
        let err = render("{{.Nope}}", &rows).unwrap_err();
        assert_eq!(
            err,
            TemplateError::NoField {
                field: "Nope".into(),
                fields: "ID, Size".into()
            }
        );
        for bad in [
            "{{.ID",
            "{{}}",
            "{{frob .ID}}",
            "{{.a-b}}",
            "{{truncate .ID x}}",
            "x}}",
            "{{join .ID}}",
        ] {
            assert!(
                matches!(render(bad, &rows), Err(TemplateError::Parse(_))),
                "{bad} parsed"
            );
        }
        assert!(matches!(
            render("{{len .Size}}", &rows),
            Err(TemplateError::Type { .. })
        ));
    }

    #[test]
    fn headers_from_field_names() {
        assert_eq!(default_header("CreatedAt"), "CREATED AT");
        assert_eq!(default_header("ID"), "ID");
        assert_eq!(default_header("RepoTags"), "REPO TAGS");
    }
}
