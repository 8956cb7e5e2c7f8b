//! Typed reading of a node's JSON parameters that collects every problem before failing.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::error::ParamError;

/// Reads parameters one by one, remembering each bad or unknown one, so a node reports all of
/// its parameter problems at once.
///
/// ```
/// # use remotemedia::nodes::Params;
/// let map = serde_json::json!({"gain_db": "loud"}).as_object().unwrap().clone();
/// let mut p = Params::new(&map);
/// let gain = p.f64_or("gain_db", 0.0);
/// let errors = p.finish().unwrap_err();
/// assert_eq!(errors[0].param, "gain_db");
/// # let _ = gain;
/// ```
pub struct Params<'a> {
    map: &'a Map<String, Value>,
    known: BTreeSet<&'static str>,
    errors: Vec<ParamError>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 { format!("{}…", &s[..s.floor_char_boundary(40)]) } else { s }
}

impl<'a> Params<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Self { map, known: BTreeSet::new(), errors: Vec::new() }
    }

    /// Records a problem with `param` found by the caller's own checks.
    pub fn error(&mut self, param: &str, message: impl Into<String>) {
        self.errors.push(ParamError::new(param, message));
    }

    fn lookup(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.insert(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn bad(&mut self, name: &str, expected: &str, v: &Value) {
        self.errors.push(ParamError::new(name, format!("must be {expected}, got {} ({})", shown(v), type_name(v))));
    }

    /// An optional positive integer; `min..=max` bounds it.
    pub fn u32_in(&mut self, name: &'static str, min: u32, max: u32) -> Option<u32> {
        let v = self.lookup(name)?;
        let expected = format!("an integer between {min} and {max}");
        match v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)) {
            Some(n) if n >= u64::from(min) && n <= u64::from(max) => Some(n as u32),
            _ => {
                self.bad(name, &expected, v);
                None
            }
        }
    }

    /// A required positive integer; `min..=max` bounds it.
    pub fn required_u32_in(&mut self, name: &'static str, min: u32, max: u32) -> Option<u32> {
        if self.map.get(name).is_none_or(Value::is_null) {
            self.known.insert(name);
            self.errors.push(ParamError::new(name, format!("is required (an integer between {min} and {max})")));
            return None;
        }
        self.u32_in(name, min, max)
    }

    /// An optional finite number, `default` when absent.
    pub fn f64_or(&mut self, name: &'static str, default: f64) -> f64 {
        let Some(v) = self.lookup(name) else { return default };
        match v.as_f64() {
            Some(f) if f.is_finite() => f,
            _ => {
                self.bad(name, "a finite number", v);
                default
            }
        }
    }

    /// An optional finite number within `min..=max`, `default` when absent.
    pub fn f64_in(&mut self, name: &'static str, min: f64, max: f64, default: f64) -> f64 {
        let Some(v) = self.lookup(name) else { return default };
        match v.as_f64() {
            Some(f) if f.is_finite() && f >= min && f <= max => f,
            _ => {
                self.bad(name, &format!("a number between {min} and {max}"), v);
                default
            }
        }
    }

    /// An optional string from `allowed`, `default` when absent.
    pub fn choice(&mut self, name: &'static str, allowed: &[&'static str], default: &'static str) -> &'static str {
        let Some(v) = self.lookup(name) else { return default };
        if let Some(found) = v.as_str().and_then(|s| allowed.iter().find(|a| a.eq_ignore_ascii_case(s))) {
            return found;
        }
        let expected = format!("one of {}", allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", "));
        self.bad(name, &expected, v);
        default
    }

    /// Whether `name` was given at all.
    pub fn has(&mut self, name: &'static str) -> bool {
        self.known.insert(name);
        self.map.get(name).is_some_and(|v| !v.is_null())
    }

    /// Fails with every problem found, including parameters no reader asked for.
    pub fn finish(mut self) -> Result<(), Vec<ParamError>> {
        let accepted = self.known.iter().copied().collect::<Vec<_>>().join(", ");
        for key in self.map.keys() {
            if !self.known.contains(key.as_str()) {
                let hint = if accepted.is_empty() {
                    "is not accepted (this node takes no parameters)".to_owned()
                } else {
                    format!("is not accepted (accepted: {accepted})")
                };
                self.errors.push(ParamError::new(key.clone(), hint));
            }
        }
        if self.errors.is_empty() { Ok(()) } else { Err(self.errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn collects_every_problem() {
        let m = map(json!({"rate": "fast", "mode": "loud", "typo": 1}));
        let mut p = Params::new(&m);
        assert_eq!(p.u32_in("rate", 1, 10), None);
        assert_eq!(p.choice("mode", &["soft", "hard"], "soft"), "soft");
        assert_eq!(p.required_u32_in("size", 1, 4), None);
        let errs = p.finish().unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 4, "{text:?}");
        assert!(text[0].contains("`rate` must be an integer between 1 and 10, got \"fast\" (a string)"), "{text:?}");
        assert!(text[1].contains("one of \"soft\", \"hard\""), "{text:?}");
        assert!(text[2].contains("`size` is required"), "{text:?}");
        assert!(text[3].contains("`typo` is not accepted (accepted: mode, rate, size)"), "{text:?}");
    }

    #[test]
    fn integral_floats_count_as_integers() {
        let m = map(json!({"rate": 16000.0}));
        let mut p = Params::new(&m);
        assert_eq!(p.u32_in("rate", 1, 384_000), Some(16_000));
        p.finish().unwrap();
    }

    #[test]
    fn choices_ignore_case() {
        let m = map(json!({"q": "HIGH"}));
        let mut p = Params::new(&m);
        assert_eq!(p.choice("q", &["low", "high"], "low"), "high");
    }
}
