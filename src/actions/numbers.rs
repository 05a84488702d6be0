//! Params as numbers and text, the way actionhero's formatters read and write them.

use serde_json::Value;

/// A param as a whole number: a JSON number with an integral value, whatever its notation
/// (`1`, `1.0` and `1e0` are all the number 1 in JSON), not negative. `None` for anything
/// else, fractions and negative numbers included.
pub fn whole_number(v: &Value) -> Option<u64> {
    let Value::Number(n) = v else {
        return None;
    };
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    // 2^53: beyond it a double no longer holds every integer.
    (f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f)).then_some(f as u64)
}

/// A scalar param as actionhero's string formatter writes it: numbers as JavaScript prints
/// them (`1.5` → `"1.5"`, `100.0` → `"100"`, `1e21` → `"1e+21"`), booleans as `"true"` /
/// `"false"`; strings, arrays, objects and `null` are returned as they are.
pub fn scalar_as_text(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(js_number(&n)),
        Value::Bool(b) => Value::String(b.to_string()),
        other => other,
    }
}

fn js_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let a = f.abs();
    if f == 0.0 {
        "0".into()
    } else if (1e-6..1e21).contains(&a) {
        // Rust prints the shortest form that reads back, as JavaScript does.
        let s = f.to_string();
        s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
    } else {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_numbers_in_any_notation() {
        let parse = |t: &str| whole_number(&serde_json::from_str::<Value>(t).expect("json"));
        assert_eq!(parse("1"), Some(1));
        assert_eq!(parse("1.0"), Some(1));
        assert_eq!(parse("1e0"), Some(1));
        assert_eq!(parse("100.0"), Some(100));
        assert_eq!(parse("1.5"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("\"1\""), None);
        assert_eq!(parse("1e300"), None);
    }

    #[test]
    fn scalars_as_javascript_prints_them() {
        let text = |t: &str| scalar_as_text(serde_json::from_str::<Value>(t).expect("json"));
        assert_eq!(text("1.5"), json!("1.5"));
        assert_eq!(text("100.0"), json!("100"));
        assert_eq!(text("-3"), json!("-3"));
        assert_eq!(text("1e21"), json!("1e+21"));
        assert_eq!(text("1e-7"), json!("1e-7"));
        assert_eq!(text("0.000001"), json!("0.000001"));
        assert_eq!(text("true"), json!("true"));
        assert_eq!(text("[1]"), json!([1]));
        assert_eq!(text("\"x\""), json!("x"));
    }
}
