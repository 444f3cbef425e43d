//! `attache render`: per-host configs from a Jinja template (minijinja) and a YAML
//! file of variables. Undefined variables are errors, and a fuel budget plus a
//! recursion limit bound every template, so a runaway loop fails instead of
//! hanging CI. `{% include %}` is not available in templates (no loader): share
//! pieces with the config's own `include:`.

use minijinja::{Environment, UndefinedBehavior};

use crate::config::load::{self, Diagnostic};

/// Instructions a template may execute (a loop iteration costs a few).
pub const FUEL: u64 = 2_000_000;
/// Nested macro calls / blocks.
pub const RECURSION_LIMIT: usize = 64;

fn diag(file: &str, line: usize, col: usize, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line,
        col,
        message,
    }
}

/// Column of byte offset `at` in `text` (1-based, counting chars).
fn column(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text.get(start..at).map_or(1, |s| s.chars().count() + 1)
}

/// Read the variables file: a YAML mapping (an empty file is no variables).
pub fn read_vars(path: &str) -> Result<serde_yaml::Value, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![diag(path, 1, 1, format!("cannot read vars: {e}"))])?;
    match load::parse_yaml(path, &text).map_err(|d| vec![d])? {
        v @ serde_yaml::Value::Mapping(_) => Ok(v),
        _ => Err(vec![diag(
            path,
            1,
            1,
            "variables must be a YAML mapping of name: value".into(),
        )]),
    }
}

/// Render `template` (its text) with `vars`; errors point into the template.
pub fn render(name: &str, template: &str, vars: &serde_yaml::Value) -> Result<String, Diagnostic> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_keep_trailing_newline(true);
    let to_diag = |e: minijinja::Error| {
        let line = e.line().unwrap_or(1);
        let col = e.range().map_or(1, |r| column(template, r.start));
        let what = match e.kind() {
            minijinja::ErrorKind::UndefinedError => match e.range().and_then(|r| template.get(r)) {
                Some(expr) => format!("undefined variable in `{}`", expr.trim()),
                None => "undefined variable".to_string(),
            },
            minijinja::ErrorKind::OutOfFuel => format!(
                "template ran out of fuel ({FUEL} instructions): a loop that does not end or is far too large"
            ),
            k => k.to_string(),
        };
        let mut msg = format!("template error: {what}");
        if let Some(d) = e.detail() {
            msg.push_str(": ");
            msg.push_str(d);
        }
        diag(name, line, col, msg)
    };
    let tmpl = env
        .template_from_named_str(name, template)
        .map_err(to_diag)?;
    tmpl.render(vars).map_err(to_diag)
}

/// Read and render; errors located in the template or the vars file.
pub fn render_files(template: &str, vars: Option<&str>) -> Result<String, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(template)
        .map_err(|e| vec![diag(template, 1, 1, format!("cannot read template: {e}"))])?;
    let vars = match vars {
        Some(v) => read_vars(v)?,
        None => serde_yaml::Value::Mapping(Default::default()),
    };
    render(template, &text, &vars).map_err(|d| vec![d])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(y: &str) -> serde_yaml::Value {
        serde_yaml::from_str(y).expect("yaml")
    }

    #[test]
    fn renders_loops_and_variables() {
        let out = render(
            "t.j2",
            "{% for p in ports %}- {{ p }}\n{% endfor %}",
            &vars("ports: [1, 2]"),
        )
        .expect("renders");
        assert_eq!(out, "- 1\n- 2\n");
    }

    #[test]
    fn undefined_variable_points_at_its_line() {
        let e = render("t.j2", "a: 1\nb: {{ nope }}\n", &vars("{}")).expect_err("fails");
        assert_eq!((e.file.as_str(), e.line), ("t.j2", 2));
        assert!(e.message.contains("undefined"), "{}", e.message);
    }

    #[test]
    fn runaway_loops_and_recursion_stop() {
        let e = render(
            "t.j2",
            "x\n{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
            &vars("{}"),
        )
        .expect_err("fails");
        assert_eq!(e.line, 2, "{e:?}");
        let e = render(
            "t.j2",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            &vars("{}"),
        )
        .expect_err("fails");
        assert_eq!(e.line, 1, "{e:?}");
    }
}
