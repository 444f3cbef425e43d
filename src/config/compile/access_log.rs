//! A listener's `access_log:` block: destination and format.

use std::sync::Arc;

use super::Cx;
use crate::config::raw;
use crate::config::snapshot::AccessLogCfg;

/// A listener's `access_log`: the destination checked (with file checks: it can be
/// opened for append) and the format compiled, every problem reported.
pub(super) fn access_log(
    cx: &mut Cx<'_>,
    path: &str,
    a: &raw::AccessLog,
    check_files: bool,
) -> Option<AccessLogCfg> {
    use crate::accesslog::Format;
    let mut ok = true;
    if a.path.is_empty() {
        cx.err(
            &format!("{path}.path"),
            "access_log.path must be `stdout`, `stderr` or a file path",
        );
        ok = false;
    } else if check_files {
        if let Err(e) = crate::accesslog::check_path(&a.path) {
            cx.err(
                &format!("{path}.path"),
                format!("{e}; create the directory or fix its permissions (validate --skip-files skips this check)"),
            );
            ok = false;
        }
    }
    let format = match (a.format.as_deref(), &a.json_format) {
        (Some(_), Some(_)) => {
            cx.err_key(
                &format!("{path}.json_format"),
                "set either `format` or `json_format`, not both",
            );
            None
        }
        (None | Some("json"), None) => Some(Format::builtin_json()),
        (Some("text"), None) => Some(Format::builtin_text()),
        (Some(t), None) if t.contains('%') => match Format::text(t) {
            Ok(f) => Some(f),
            Err(errors) => {
                for e in errors {
                    cx.err(&format!("{path}.format"), e);
                }
                None
            }
        },
        (Some(t), None) => {
            cx.err(
                &format!("{path}.format"),
                format!("unknown format `{t}`; use `json`, `text`, or a template such as \"%RESPONSE_CODE% %REQ(:PATH)%\""),
            );
            None
        }
        (None, Some(m)) => json_format(cx, &format!("{path}.json_format"), m),
    };
    let format = format.filter(|_| ok)?;
    Some(AccessLogCfg {
        path: a.path.clone(),
        format: Arc::new(format),
    })
}

/// `json_format`: string keys, each value a template string.
pub(super) fn json_format(
    cx: &mut Cx<'_>,
    path: &str,
    m: &serde_yaml::Mapping,
) -> Option<crate::accesslog::Format> {
    let mut fields = Vec::new();
    let mut bad = false;
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            cx.err(path, "json_format keys must be strings");
            bad = true;
            continue;
        };
        match v.as_str() {
            Some(t) => fields.push((key.to_string(), t.to_string())),
            None => {
                cx.err(
                    &format!("{path}.{key}"),
                    "a json_format value is a template string, e.g. \"%RESPONSE_CODE%\"",
                );
                bad = true;
            }
        }
    }
    if fields.is_empty() && !bad {
        cx.err(path, "json_format needs at least one field");
        return None;
    }
    match crate::accesslog::Format::json(&fields) {
        Ok(f) if !bad => Some(f),
        Ok(_) => None,
        Err(errors) => {
            for (k, e) in errors {
                cx.err(&format!("{path}.{k}"), e);
            }
            None
        }
    }
}
