//! Typed reading of a parsed JSON tree, so every error names the exact field path
//! (`split.hash_key[0].header`) and unknown fields are refused where they stand.

use super::{refuse, ConfigError};
use serde_json::{Map, Value};

/// The JSON type of `v`, as error messages name it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid_type(path: &str, v: &Value, expected: &str) -> ConfigError {
    refuse(path, format!("invalid type: {}, expected {expected}", type_name(v)))
}

/// The fields of one JSON object, at `path`.
pub struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// The top-level object, accepting only the `known` field names.
    pub fn root(value: &'a Value, known: &[&str]) -> Result<Self, ConfigError> {
        Self::new(String::new(), value, known)
    }

    fn new(path: String, value: &'a Value, known: &[&str]) -> Result<Self, ConfigError> {
        let Value::Object(map) = value else {
            let at = if path.is_empty() { "(root)" } else { path.as_str() };
            return Err(invalid_type(at, value, "an object"));
        };
        let fields = Fields { path, map };
        if let Some(name) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            return Err(refuse(
                &fields.path_of(name),
                format!("unknown field `{name}`, expected one of {}", expected.join(", ")),
            ));
        }
        Ok(fields)
    }

    /// The dotted path of field `name` of this object.
    pub fn path_of(&self, name: &str) -> String {
        let name = if name.is_empty() { "\"\"" } else { name };
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The path of this object, `(root)` for the top level.
    pub fn path(&self) -> &str {
        if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    /// A nested object, accepting only the `known` field names.
    pub fn object(&self, name: &str, known: &[&str]) -> Result<Option<Fields<'a>>, ConfigError> {
        self.get(name).map(|v| Self::new(self.path_of(name), v, known)).transpose()
    }

    /// A string field.
    pub fn string(&self, name: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(invalid_type(&self.path_of(name), v, "a string")),
        }
    }

    /// A boolean field.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(invalid_type(&self.path_of(name), v, "a boolean")),
        }
    }

    /// The text of a number field, exactly as written.
    pub fn number_text(&self, name: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n.as_str())),
            Some(v) => Err(invalid_type(&self.path_of(name), v, "a number")),
        }
    }

    /// A non-negative integer field not above `max`.
    pub fn integer(&self, name: &str, max: u64) -> Result<Option<u64>, ConfigError> {
        let Some(text) = self.number_text(name)? else { return Ok(None) };
        text.parse::<u64>().ok().filter(|&n| n <= max).map(Some).ok_or_else(|| {
            refuse(&self.path_of(name), format!("invalid value: {text}, expected an integer in 0..={max}"))
        })
    }

    /// One of `variants`.
    pub fn variant(&self, name: &str, variants: &[&'static str]) -> Result<Option<&'static str>, ConfigError> {
        let Some(text) = self.string(name)? else { return Ok(None) };
        variants.iter().find(|v| **v == text).copied().map(Some).ok_or_else(|| {
            let expected: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
            refuse(&self.path_of(name), format!("unknown variant `{text}`, expected one of {}", expected.join(", ")))
        })
    }

    /// An array field's items, each with its own path (`name[i]`).
    pub fn array(&self, name: &str) -> Result<Option<Vec<(String, &'a Value)>>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                let path = self.path_of(name);
                Ok(Some(items.iter().enumerate().map(|(i, v)| (format!("{path}[{i}]"), v)).collect()))
            }
            Some(v) => Err(invalid_type(&self.path_of(name), v, "an array")),
        }
    }

    /// An array item as an object with the `known` fields.
    pub fn item(path: String, value: &'a Value, known: &[&str]) -> Result<Fields<'a>, ConfigError> {
        Self::new(path, value, known)
    }

    /// An array item as a string.
    pub fn item_string(path: &str, value: &'a Value) -> Result<&'a str, ConfigError> {
        value.as_str().ok_or_else(|| invalid_type(path, value, "a string"))
    }
}
