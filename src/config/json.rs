//! Typed reading of a parsed JSON tree ([`Value`]), so every error names the exact field path
//! (`split.hash_key[0].header`) and unknown fields are refused where they stand.
//!
//! Hand-written instead of `#[derive(Deserialize)]`: the derive's generated visitors and error
//! paths made the filter 36 KB larger. Each object is read by a closure that asks for its
//! fields by name; whatever field it did not ask for is refused afterwards, so the field names
//! are written once, where they are read.

use super::value::Value;
use super::{refuse, ConfigError};
use std::cell::RefCell;

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
    members: &'a [(String, Value)],
    /// The field names asked for so far, in order: the known fields.
    asked: RefCell<Vec<&'static str>>,
}

impl<'a> Fields<'a> {
    /// Reads the object `value` at `path` (empty for the top level) with `read`, then refuses
    /// any field `read` did not ask for.
    pub fn read<T>(
        path: String,
        value: &'a Value,
        read: impl FnOnce(&Fields<'a>) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        let fields = Self::new(path, value)?;
        let out = read(&fields)?;
        fields.refuse_unknown()?;
        Ok(out)
    }

    // Out of line: one copy serves every object (inlined, each object's reader grew by it).
    #[inline(never)]
    fn new(path: String, value: &'a Value) -> Result<Self, ConfigError> {
        let Value::Object(members) = value else {
            let at = if path.is_empty() { "(root)" } else { path.as_str() };
            return Err(invalid_type(at, value, "an object"));
        };
        Ok(Fields { path, members, asked: RefCell::default() })
    }

    #[inline(never)]
    fn refuse_unknown(&self) -> Result<(), ConfigError> {
        let asked = self.asked.borrow();
        match self.members.iter().map(|(k, _)| k).find(|k| !asked.contains(&k.as_str())) {
            None => Ok(()),
            Some(name) => {
                let expected: Vec<String> = asked.iter().map(|k| format!("`{k}`")).collect();
                Err(refuse(
                    &self.path_of(name),
                    format!("unknown field `{name}`, expected one of {}", expected.join(", ")),
                ))
            }
        }
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

    // Out of line: called for every field of the configuration.
    #[inline(never)]
    fn get(&self, name: &'static str) -> Option<&'a Value> {
        let mut asked = self.asked.borrow_mut();
        if !asked.contains(&name) {
            asked.push(name);
        }
        self.members.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Updates `into` from the nested object `name` with `read`, if present.
    pub fn section<T>(
        &self,
        name: &'static str,
        into: &mut T,
        read: impl FnOnce(&Fields<'a>, &mut T) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        match self.get(name) {
            None => Ok(()),
            Some(value) => Self::read(self.path_of(name), value, |f| read(f, into)),
        }
    }

    /// A string field.
    pub fn string(&self, name: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(invalid_type(&self.path_of(name), v, "a string")),
        }
    }

    /// Sets `into` to the string field `name`, if present.
    pub fn set_string(&self, name: &'static str, into: &mut String) -> Result<(), ConfigError> {
        if let Some(s) = self.string(name)? {
            *into = s.to_string();
        }
        Ok(())
    }

    /// Sets `into` to the boolean field `name`, if present.
    pub fn set_boolean(&self, name: &'static str, into: &mut bool) -> Result<(), ConfigError> {
        match self.get(name) {
            None => Ok(()),
            Some(Value::Bool(b)) => {
                *into = *b;
                Ok(())
            }
            Some(v) => Err(invalid_type(&self.path_of(name), v, "a boolean")),
        }
    }

    /// The text of a number field, exactly as written.
    pub fn number_text(&self, name: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(text)) => Ok(Some(text.as_str())),
            Some(v) => Err(invalid_type(&self.path_of(name), v, "a number")),
        }
    }

    /// A non-negative integer field not above `max`.
    pub fn integer(&self, name: &'static str, max: u64) -> Result<Option<u64>, ConfigError> {
        let Some(text) = self.number_text(name)? else { return Ok(None) };
        text.parse::<u64>().ok().filter(|&n| n <= max).map(Some).ok_or_else(|| {
            refuse(&self.path_of(name), format!("invalid value: {text}, expected an integer in 0..={max}"))
        })
    }

    /// The index in `variants` of the string field `name`, if present.
    pub fn variant(&self, name: &'static str, variants: &[&str]) -> Result<Option<usize>, ConfigError> {
        let Some(text) = self.string(name)? else { return Ok(None) };
        variants.iter().position(|v| *v == text).map(Some).ok_or_else(|| {
            let expected: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
            refuse(&self.path_of(name), format!("unknown variant `{text}`, expected one of {}", expected.join(", ")))
        })
    }

    /// An array field's items, each with its own path (`name[i]`).
    pub fn array(&self, name: &'static str) -> Result<Option<Vec<Item<'a>>>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                let path = self.path_of(name);
                Ok(Some(
                    items.iter().enumerate().map(|(i, value)| Item { path: format!("{path}[{i}]"), value }).collect(),
                ))
            }
            Some(v) => Err(invalid_type(&self.path_of(name), v, "an array")),
        }
    }
}

impl<'a> Fields<'a> {
    /// An object field whose member names are data (class or outcome names): each member as an
    /// item with its path (`name.member`).
    pub fn members(&self, name: &'static str) -> Result<Option<Vec<(&'a str, Item<'a>)>>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(members)) => {
                let path = self.path_of(name);
                Ok(Some(
                    members
                        .iter()
                        .map(|(key, value)| (key.as_str(), Item { path: format!("{path}.{key}"), value }))
                        .collect(),
                ))
            }
            Some(v) => Err(invalid_type(&self.path_of(name), v, "an object")),
        }
    }
}

/// One item of an array field, with its path.
pub struct Item<'a> {
    /// `name[i]`.
    pub path: String,
    value: &'a Value,
}

impl<'a> Item<'a> {
    /// The item as a string.
    pub fn string(&self) -> Result<&'a str, ConfigError> {
        match self.value {
            Value::String(s) => Ok(s),
            other => Err(invalid_type(&self.path, other, "a string")),
        }
    }

    /// The text of the item as a number, exactly as written.
    pub fn number_text(&self) -> Result<&'a str, ConfigError> {
        match self.value {
            Value::Number(text) => Ok(text),
            other => Err(invalid_type(&self.path, other, "a number")),
        }
    }

    /// The item as an object read by `read`.
    pub fn object<T>(self, read: impl FnOnce(&Fields<'a>) -> Result<T, ConfigError>) -> Result<T, ConfigError> {
        Fields::read(self.path, self.value, read)
    }
}
