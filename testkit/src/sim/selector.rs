//! Label and field selectors as the API server parses them from query strings.

use serde_json::Value;

use super::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`app=web,tier in (a,b),!legacy`).
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0_i32;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(rest: &str) -> ApiResult<Vec<String>> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: set {rest}")))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

/// Whether `value` is a valid label value: empty, or at most 63 alphanumerics, `-`,
/// `_` and `.`, starting and ending with an alphanumeric.
fn valid_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Refuses a requirement whose values no label can have, as the real parser does.
fn check_values(req: &LabelRequirement) -> ApiResult<()> {
    let (key, values) = match req {
        LabelRequirement::Equals(k, v) | LabelRequirement::NotEquals(k, v) => {
            (k, std::slice::from_ref(v))
        }
        LabelRequirement::In(k, vs) | LabelRequirement::NotIn(k, vs) => (k, vs.as_slice()),
        LabelRequirement::Exists(_) | LabelRequirement::NotExists(_) => return Ok(()),
    };
    match values.iter().find(|v| !valid_label_value(v)) {
        Some(v) => Err(ApiError::bad_request(format!(
            "unable to parse requirement: values[0][{key}]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))),
        None => Ok(()),
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelRequirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelRequirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                LabelRequirement::NotIn(k.trim().to_owned(), parse_set(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                LabelRequirement::In(k.trim().to_owned(), parse_set(rest)?)
            } else if let Some(k) = part.strip_prefix('!') {
                LabelRequirement::NotExists(k.trim().to_owned())
            } else if part.contains(' ') || part.contains('(') {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: {part}"
                )));
            } else {
                LabelRequirement::Exists(part)
            };
            check_values(&req)?;
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Builds the selector of a `LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(selector: &Value) -> Self {
        let mut reqs = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                reqs.push(LabelRequirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_owned();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                match e["operator"].as_str() {
                    Some("In") => reqs.push(LabelRequirement::In(key, values)),
                    Some("NotIn") => reqs.push(LabelRequirement::NotIn(key, values)),
                    Some("Exists") => reqs.push(LabelRequirement::Exists(key)),
                    Some("DoesNotExist") => reqs.push(LabelRequirement::NotExists(key)),
                    _ => {}
                }
            }
        }
        Self(reqs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches_labels(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.matches_labels(object.pointer("/metadata/labels"))
    }
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let (key, equal, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            reqs.push((key.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(key, equal, value)| {
            let pointer = format!("/{}", key.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_label_selectors_match_like_the_api_server() {
        let sel = LabelSelector::parse("app in (web, api),!legacy,tier!=db").expect("parses");
        assert!(sel.matches(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!sel.matches(&json!({"metadata": {"labels": {"app": "web", "legacy": "1"}}})));
        assert!(!sel.matches(&json!({"metadata": {"labels": {"app": "job"}}})));
        assert!(!sel.matches(&json!({"metadata": {"labels": {"app": "api", "tier": "db"}}})));
    }

    #[test]
    fn field_selectors_walk_nested_fields() {
        let sel = FieldSelector::parse("involvedObject.name=web,type!=Normal").expect("parses");
        assert!(sel.matches(&json!({"involvedObject": {"name": "web"}, "type": "Warning"})));
        assert!(!sel.matches(&json!({"involvedObject": {"name": "web"}, "type": "Normal"})));
    }
}
