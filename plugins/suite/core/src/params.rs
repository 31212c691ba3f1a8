//! Parameters as the plugin contract has them: declared with defaults and ranges, received
//! resolved (every parameter present, in range).

/// A parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A whole number.
    Integer(i64),
    /// A real number.
    Float(f64),
    /// True or false.
    Boolean(bool),
    /// Free text.
    Text(String),
}

/// One parameter a benchmark takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    /// Name on command lines and forms.
    pub name: &'static str,
    /// What it means.
    pub summary: &'static str,
    /// Value when none is given; its kind is the parameter's kind.
    pub default: Value,
    /// Smallest accepted value.
    pub min: Option<f64>,
    /// Largest accepted value.
    pub max: Option<f64>,
    /// Unit, empty when none.
    pub unit: &'static str,
}

impl ParamDecl {
    /// An integer parameter in `[min, max]`.
    pub fn integer(
        name: &'static str,
        summary: &'static str,
        default: i64,
        min: i64,
        max: i64,
        unit: &'static str,
    ) -> ParamDecl {
        ParamDecl {
            name,
            summary,
            default: Value::Integer(default),
            min: Some(min as f64),
            max: Some(max as f64),
            unit,
        }
    }

    /// A boolean parameter.
    pub fn boolean(name: &'static str, summary: &'static str, default: bool) -> ParamDecl {
        ParamDecl {
            name,
            summary,
            default: Value::Boolean(default),
            min: None,
            max: None,
            unit: "",
        }
    }

    /// A text parameter.
    pub fn text(name: &'static str, summary: &'static str, default: &str) -> ParamDecl {
        ParamDecl {
            name,
            summary,
            default: Value::Text(default.into()),
            min: None,
            max: None,
            unit: "",
        }
    }
}

/// The parameters of a run, by name, resolved by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<(String, Value)>);

impl Params {
    /// Wraps resolved values.
    pub fn new(values: Vec<(String, Value)>) -> Params {
        Params(values)
    }

    fn get(&self, name: &str) -> Res<&Value> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("parameter {name} is missing"))
    }

    /// An integer parameter.
    pub fn integer(&self, name: &str) -> Res<i64> {
        match self.get(name)? {
            Value::Integer(v) => Ok(*v),
            other => Err(format!("parameter {name} is {other:?}, not an integer")),
        }
    }

    /// A positive integer parameter, as a size or count.
    pub fn count(&self, name: &str) -> Res<usize> {
        let v = self.integer(name)?;
        usize::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| format!("parameter {name} must be positive, got {v}"))
    }

    /// A boolean parameter.
    pub fn boolean(&self, name: &str) -> Res<bool> {
        match self.get(name)? {
            Value::Boolean(v) => Ok(*v),
            other => Err(format!("parameter {name} is {other:?}, not a boolean")),
        }
    }

    /// A text parameter.
    pub fn text(&self, name: &str) -> Res<String> {
        match self.get(name)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(format!("parameter {name} is {other:?}, not text")),
        }
    }
}

use crate::Res;

/// The timing parameters every benchmark takes.
pub(crate) fn timing(warmup: i64, repetitions: i64) -> [ParamDecl; 2] {
    [
        ParamDecl::integer(
            "warmup",
            "Untimed runs of the measured work first",
            warmup,
            0,
            1000,
            "runs",
        ),
        ParamDecl::integer(
            "repetitions",
            "Timed samples; figures are their median, with min and max",
            repetitions,
            1,
            10_000,
            "samples",
        ),
    ]
}
