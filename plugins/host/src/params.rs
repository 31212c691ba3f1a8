//! Plugin descriptions and parameters: what `describe` returns, and turning what a person typed
//! (`size=1048576`) into checked values before a run starts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::PluginError;
use crate::bindings;

/// The kinds of parameter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// Whole numbers.
    Integer,
    /// Real numbers.
    Float,
    /// true / false.
    Boolean,
    /// Free text.
    Text,
}

impl ParamKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::Integer => "integer",
            ParamKind::Float => "float",
            ParamKind::Boolean => "boolean",
            ParamKind::Text => "text",
        }
    }
}

/// A parameter value; in JSON a plain number, boolean or string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A whole number.
    Integer(i64),
    /// A real number.
    Float(f64),
    /// true / false.
    Boolean(bool),
    /// Free text.
    Text(String),
}

impl ParamValue {
    /// Its kind.
    pub fn kind(&self) -> ParamKind {
        match self {
            ParamValue::Integer(_) => ParamKind::Integer,
            ParamValue::Float(_) => ParamKind::Float,
            ParamValue::Boolean(_) => ParamKind::Boolean,
            ParamValue::Text(_) => ParamKind::Text,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Integer(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Integer(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Boolean(v) => write!(f, "{v}"),
            ParamValue::Text(v) => write!(f, "{v}"),
        }
    }
}

/// One parameter a plugin takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Its name.
    pub name: String,
    /// What it means.
    pub summary: String,
    /// Its kind.
    pub kind: ParamKind,
    /// The value used when none is given.
    pub default: ParamValue,
    /// Smallest accepted value.
    pub min: Option<f64>,
    /// Largest accepted value.
    pub max: Option<f64>,
    /// Unit, empty when none.
    pub unit: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Short unique name.
    pub name: String,
    /// Version.
    pub version: String,
    /// One paragraph.
    pub summary: String,
    /// Parameters.
    pub params: Vec<ParamSpec>,
}

impl PluginInfo {
    /// Checks and converts what `describe` returned.
    pub(crate) fn from_wit(info: bindings::PluginInfo) -> Result<PluginInfo, String> {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        if !valid_name(&info.name) {
            return Err(format!(
                "describe returned the name {:?}: use 1 to 64 lower-case letters, digits, '-' or '_'",
                info.name
            ));
        }
        if !valid_version(&info.version) {
            return Err(format!(
                "describe returned the version {:?}: use 1 to 64 letters, digits, '.', '-' or '+', \
                 e.g. \"1.2.0\"",
                info.version
            ));
        }
        let mut params = Vec::with_capacity(info.params.len());
        for spec in info.params {
            if !valid_name(&spec.name) {
                return Err(format!("parameter name {:?} is not valid", spec.name));
            }
            let kind = match spec.kind {
                bindings::ValueKind::Integer => ParamKind::Integer,
                bindings::ValueKind::Float => ParamKind::Float,
                bindings::ValueKind::Boolean => ParamKind::Boolean,
                bindings::ValueKind::Text => ParamKind::Text,
            };
            let default = from_wit_value(spec.default);
            if default.kind() != kind {
                return Err(format!(
                    "parameter {}: the default is {}, the parameter {}",
                    spec.name,
                    default.kind().as_str(),
                    kind.as_str()
                ));
            }
            if params.iter().any(|p: &ParamSpec| p.name == spec.name) {
                return Err(format!("parameter {} is declared twice", spec.name));
            }
            params.push(ParamSpec {
                name: spec.name,
                summary: spec.summary,
                kind,
                default,
                min: spec.min,
                max: spec.max,
                unit: spec.unit,
            });
        }
        Ok(PluginInfo {
            name: info.name,
            version: info.version,
            summary: info.summary,
            params,
        })
    }
}

/// A version as semantic versioning writes it: it travels in file names and HTTP headers, so
/// nothing else (quotes, spaces, line breaks) may be in it.
fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

fn from_wit_value(value: bindings::Value) -> ParamValue {
    match value {
        bindings::Value::Integer(v) => ParamValue::Integer(v),
        bindings::Value::Float(v) => ParamValue::Float(v),
        bindings::Value::Boolean(v) => ParamValue::Boolean(v),
        bindings::Value::Text(v) => ParamValue::Text(v),
    }
}

pub(crate) fn to_wit(name: &str, value: &ParamValue) -> bindings::Param {
    bindings::Param {
        name: name.to_string(),
        value: match value {
            ParamValue::Integer(v) => bindings::Value::Integer(*v),
            ParamValue::Float(v) => bindings::Value::Float(*v),
            ParamValue::Boolean(v) => bindings::Value::Boolean(*v),
            ParamValue::Text(v) => bindings::Value::Text(v.clone()),
        },
    }
}

/// Turns `name=value` texts into the full, checked parameter list of `info`: every parameter
/// in declaration order, defaults filled in, kinds parsed, ranges enforced, unknown names refused.
pub fn resolve_params(
    info: &PluginInfo,
    given: &[(String, String)],
) -> Result<Vec<(String, ParamValue)>, PluginError> {
    let bad = |name: &str, message: String| PluginError::BadParam {
        name: name.to_string(),
        message,
    };
    for (name, _) in given {
        if !info.params.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
            return Err(bad(
                name,
                format!(
                    "{} has no such parameter (it takes: {})",
                    info.name,
                    known.join(", ")
                ),
            ));
        }
    }
    let mut resolved = Vec::with_capacity(info.params.len());
    for spec in &info.params {
        let text = given
            .iter()
            .rev()
            .find(|(n, _)| n == &spec.name)
            .map(|(_, v)| v.trim());
        let value = match text {
            None => spec.default.clone(),
            Some(text) => parse(spec.kind, text).ok_or_else(|| {
                bad(
                    &spec.name,
                    format!("{text:?} is not a valid {}", spec.kind.as_str()),
                )
            })?,
        };
        if let Some(v) = value.as_f64() {
            if let Some(min) = spec.min
                && v < min
            {
                return Err(bad(
                    &spec.name,
                    format!("{value} is below the minimum {min}"),
                ));
            }
            if let Some(max) = spec.max
                && v > max
            {
                return Err(bad(
                    &spec.name,
                    format!("{value} is above the maximum {max}"),
                ));
            }
        }
        resolved.push((spec.name.clone(), value));
    }
    Ok(resolved)
}

fn parse(kind: ParamKind, text: &str) -> Option<ParamValue> {
    Some(match kind {
        ParamKind::Integer => ParamValue::Integer(parse_integer(text)?),
        ParamKind::Float => ParamValue::Float(text.parse().ok().filter(|v: &f64| v.is_finite())?),
        ParamKind::Boolean => ParamValue::Boolean(match text {
            "true" | "yes" | "1" | "on" => true,
            "false" | "no" | "0" | "off" => false,
            _ => return None,
        }),
        ParamKind::Text => ParamValue::Text(text.to_string()),
    })
}

/// Whole numbers, with `_` separators and binary suffixes allowed: `32_000_000`, `64Mi`, `1Gi`.
fn parse_integer(text: &str) -> Option<i64> {
    let text = text.replace('_', "");
    let (digits, scale) = match text.strip_suffix("Ki") {
        Some(d) => (d.to_string(), 1i64 << 10),
        None => match text.strip_suffix("Mi") {
            Some(d) => (d.to_string(), 1 << 20),
            None => match text.strip_suffix("Gi") {
                Some(d) => (d.to_string(), 1 << 30),
                None => (text.clone(), 1),
            },
        },
    };
    digits.parse::<i64>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_plain_text_for_headers_and_file_names() {
        for good in ["0.1.0", "1.0.0-rc.1+build.7", "2024.12"] {
            assert!(valid_version(good), "{good}");
        }
        for bad in [
            "",
            "1.0\"; filename=\"evil.exe",
            "1.0\r\nSet-Cookie: x=1",
            "1 0",
            &"9".repeat(65),
        ] {
            assert!(!valid_version(bad), "{bad:?}");
        }
    }

    fn info() -> PluginInfo {
        PluginInfo {
            name: "p".into(),
            version: "1.0.0".into(),
            summary: String::new(),
            params: vec![
                ParamSpec {
                    name: "size".into(),
                    summary: String::new(),
                    kind: ParamKind::Integer,
                    default: ParamValue::Integer(1024),
                    min: Some(1.0),
                    max: Some(1e9),
                    unit: "elements".into(),
                },
                ParamSpec {
                    name: "pinned".into(),
                    summary: String::new(),
                    kind: ParamKind::Boolean,
                    default: ParamValue::Boolean(true),
                    min: None,
                    max: None,
                    unit: String::new(),
                },
            ],
        }
    }

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let resolved = resolve_params(&info(), &given(&[("pinned", "no")])).unwrap();
        assert_eq!(
            resolved,
            vec![
                ("size".into(), ParamValue::Integer(1024)),
                ("pinned".into(), ParamValue::Boolean(false))
            ]
        );
        let resolved = resolve_params(&info(), &given(&[("size", "64Mi")])).unwrap();
        assert_eq!(resolved[0].1, ParamValue::Integer(64 << 20));
    }

    #[test]
    fn descriptions_round_trip_through_json_with_their_kinds() {
        let mut described = info();
        described.params[0].default = ParamValue::Float(5.0);
        described.params[0].kind = ParamKind::Float;
        let text = serde_json::to_string(&described).unwrap();
        assert!(text.contains(r#""kind":"float","default":5.0"#), "{text}");
        assert_eq!(
            serde_json::from_str::<PluginInfo>(&text).unwrap(),
            described
        );
        assert_eq!(
            serde_json::from_str::<ParamValue>("1024").unwrap(),
            ParamValue::Integer(1024)
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (pairs, needle) in [
            (given(&[("colour", "red")]), "no such parameter"),
            (given(&[("size", "lots")]), "not a valid integer"),
            (given(&[("size", "0")]), "below the minimum"),
            (given(&[("size", "2000000000")]), "above the maximum"),
            (given(&[("pinned", "maybe")]), "not a valid boolean"),
        ] {
            let err = resolve_params(&info(), &pairs).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
