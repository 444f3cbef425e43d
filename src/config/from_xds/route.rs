//! Envoy `RouteConfiguration` → attache `virtual_hosts:`.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use serde_yaml::Value;

use super::{duration, into_raw, map, opt, opt_string, string};
use super::{At, Nack};
use crate::config::raw;

/// Translates one RDS resource into the virtual hosts a listener serves.
pub fn route_configuration(rc: &rds::RouteConfiguration) -> Result<Vec<raw::VirtualHost>, Nack> {
    let at = At::root(&rc.name);
    route_configuration_value(rc)?
        .into_iter()
        .map(|v| into_raw(v, &at))
        .collect()
}

/// [`route_configuration`] as the YAML values a file would hold.
pub(crate) fn route_configuration_value(rc: &rds::RouteConfiguration) -> Result<Vec<Value>, Nack> {
    let at = At::root(&rc.name);
    let mut rest = rc.clone();
    rest.name.clear();
    // attache always checks that routes name known clusters.
    rest.validate_clusters = None;
    let hosts = std::mem::take(&mut rest.virtual_hosts)
        .into_iter()
        .enumerate()
        .map(|(i, vh)| virtual_host(vh, &at.item("virtual_hosts", i)))
        .collect::<Result<Vec<_>, _>>()?;
    at.done(&rest)?;
    Ok(hosts)
}

fn virtual_host(mut vh: rds::VirtualHost, at: &At<'_>) -> Result<Value, Nack> {
    let name = std::mem::take(&mut vh.name);
    let domains: Vec<Value> = std::mem::take(&mut vh.domains)
        .iter()
        .map(|d| string(d))
        .collect();
    let routes = std::mem::take(&mut vh.routes)
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(r, &at.item("routes", i)))
        .collect::<Result<Vec<_>, _>>()?;
    at.done(&vh)?;
    Ok(map([
        ("name", string(&name)),
        ("domains", Value::Sequence(domains)),
        ("routes", Value::Sequence(routes)),
    ]))
}

fn route(mut r: rds::Route, at: &At<'_>) -> Result<Value, Nack> {
    use rds::route::Action;
    let name = opt_string(&std::mem::take(&mut r.name));
    let matcher = route_match(r.r#match.take().unwrap_or_default(), &at.at("match"))?;
    let (key, action) = match r.action.take() {
        Some(Action::Route(a)) => ("route", route_action(a, &at.at("route"))?),
        Some(Action::Redirect(a)) => ("redirect", redirect(a, &at.at("redirect"))?),
        Some(Action::DirectResponse(a)) => {
            ("direct_response", direct(a, &at.at("direct_response"))?)
        }
        _ => return Err(at.nack("action", "route, redirect or direct_response")),
    };
    at.done(&r)?;
    Ok(map([("name", name), ("match", matcher), (key, action)]))
}

fn route_match(mut m: rds::RouteMatch, at: &At<'_>) -> Result<Value, Nack> {
    use rds::route_match::PathSpecifier as P;
    let (key, path) = match m.path_specifier.take() {
        Some(P::Prefix(p)) => ("prefix", string(&p)),
        Some(P::Path(p)) => ("path", string(&p)),
        Some(P::SafeRegex(r)) => ("regex", regex(r, &at.at("safe_regex"))?),
        _ => return Err(at.nack("path_specifier", "prefix, path or safe_regex")),
    };
    if m.case_sensitive.take().is_some_and(|c| !c.value) {
        return Err(at.nack("case_sensitive", "attache matches paths case-sensitively"));
    }
    let headers = std::mem::take(&mut m.headers)
        .into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h, &at.item("headers", i)))
        .collect::<Result<Vec<_>, _>>()?;
    let query = std::mem::take(&mut m.query_parameters)
        .into_iter()
        .enumerate()
        .map(|(i, q)| query_matcher(q, &at.item("query_parameters", i)))
        .collect::<Result<Vec<_>, _>>()?;
    at.done(&m)?;
    let list = |v: Vec<Value>| {
        if v.is_empty() {
            Value::Null
        } else {
            Value::Sequence(v)
        }
    };
    Ok(map([
        (key, path),
        ("headers", list(headers)),
        ("query", list(query)),
    ]))
}

/// A `RegexMatcher` (RE2 in Envoy; attache's regex engine takes the same syntax for
/// what matchers use).
fn regex(mut r: matcher::RegexMatcher, at: &At<'_>) -> Result<Value, Nack> {
    let re = std::mem::take(&mut r.regex);
    at.done(&r)?;
    Ok(string(&re))
}

fn header_matcher(mut h: rds::HeaderMatcher, at: &At<'_>) -> Result<Value, Nack> {
    use rds::header_matcher::HeaderMatchSpecifier as H;
    let name = std::mem::take(&mut h.name);
    let invert = std::mem::take(&mut h.invert_match);
    let (key, value) = match h.header_match_specifier.take() {
        Some(H::ExactMatch(s)) => ("exact", string(&s)),
        Some(H::PrefixMatch(s)) => ("prefix", string(&s)),
        Some(H::SuffixMatch(s)) => ("suffix", string(&s)),
        Some(H::SafeRegexMatch(r)) => ("regex", regex(r, &at.at("safe_regex_match"))?),
        Some(H::PresentMatch(p)) => ("present", Value::Bool(p)),
        Some(H::StringMatch(s)) => string_matcher(s, &at.at("string_match"))?,
        None => ("present", Value::Bool(true)),
        Some(_) => {
            return Err(at.nack(
                "header_match_specifier",
                "exact, prefix, suffix, safe_regex, present or string_match",
            ))
        }
    };
    at.done(&h)?;
    Ok(map([
        ("name", string(&name)),
        (key, value),
        (
            "invert",
            if invert {
                Value::Bool(true)
            } else {
                Value::Null
            },
        ),
    ]))
}

fn string_matcher(
    mut s: matcher::StringMatcher,
    at: &At<'_>,
) -> Result<(&'static str, Value), Nack> {
    use matcher::string_matcher::MatchPattern as P;
    let out = match s.match_pattern.take() {
        Some(P::Exact(v)) => ("exact", string(&v)),
        Some(P::Prefix(v)) => ("prefix", string(&v)),
        Some(P::Suffix(v)) => ("suffix", string(&v)),
        Some(P::SafeRegex(r)) => ("regex", regex(r, &at.at("safe_regex"))?),
        _ => return Err(at.nack("match_pattern", "exact, prefix, suffix or safe_regex")),
    };
    at.done(&s)?;
    Ok(out)
}

fn query_matcher(mut q: rds::QueryParameterMatcher, at: &At<'_>) -> Result<Value, Nack> {
    use rds::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    let name = std::mem::take(&mut q.name);
    let (key, value) = match q.query_parameter_match_specifier.take() {
        Some(Q::PresentMatch(p)) => ("present", Value::Bool(p)),
        Some(Q::StringMatch(s)) => match string_matcher(s, &at.at("string_match"))? {
            (k @ ("exact" | "regex"), v) => (k, v),
            _ => return Err(at.nack("string_match", "query parameters match exactly or by regex")),
        },
        None => ("present", Value::Bool(true)),
    };
    at.done(&q)?;
    Ok(map([("name", string(&name)), (key, value)]))
}

fn route_action(mut a: rds::RouteAction, at: &At<'_>) -> Result<Value, Nack> {
    use rds::route_action::{ClusterSpecifier as C, HostRewriteSpecifier as H};
    let (key, target) = match a.cluster_specifier.take() {
        Some(C::Cluster(c)) => ("cluster", string(&c)),
        Some(C::ClusterHeader(h)) => ("cluster_header", string(&h)),
        Some(C::WeightedClusters(w)) => (
            "weighted_clusters",
            weighted(w, &at.at("weighted_clusters"))?,
        ),
        _ => {
            return Err(at.nack(
                "cluster_specifier",
                "cluster, cluster_header or weighted_clusters",
            ))
        }
    };
    let host_rewrite = match a.host_rewrite_specifier.take() {
        None => Value::Null,
        Some(H::HostRewriteLiteral(h)) => string(&h),
        Some(_) => return Err(at.nack("host_rewrite_specifier", "only host_rewrite_literal")),
    };
    let (max_stream, max_grpc) =
        stream_duration(a.max_stream_duration.take(), &at.at("max_stream_duration"))?;
    let max_grpc = match a.max_grpc_timeout.take() {
        Some(d) => duration(&Some(d), at, "max_grpc_timeout")?,
        None => max_grpc,
    };
    let value = map([
        (key, target),
        ("timeout", duration(&a.timeout.take(), at, "timeout")?),
        (
            "retries",
            retries(a.retry_policy.take(), &at.at("retry_policy"))?,
        ),
        (
            "prefix_rewrite",
            opt_string(&std::mem::take(&mut a.prefix_rewrite)),
        ),
        ("host_rewrite", host_rewrite),
        ("max_grpc_timeout", max_grpc),
        (
            "stream_idle_timeout",
            duration(&a.idle_timeout.take(), at, "idle_timeout")?,
        ),
        ("max_stream_duration", max_stream),
        (
            "upgrades",
            upgrades(std::mem::take(&mut a.upgrade_configs), at)?,
        ),
        (
            "mirror",
            mirrors(std::mem::take(&mut a.request_mirror_policies), at)?,
        ),
    ]);
    at.done(&a)?;
    Ok(value)
}

fn weighted(mut w: rds::WeightedCluster, at: &At<'_>) -> Result<Value, Nack> {
    w.total_weight = None; // attache splits by the sum of the weights, as Envoy does without it
    let clusters = std::mem::take(&mut w.clusters)
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let at = at.item("clusters", i);
            let name = std::mem::take(&mut c.name);
            let weight = c.weight.take().map(|w| u64::from(w.value)).unwrap_or(0);
            at.done(&c)?;
            Ok(map([
                ("cluster", string(&name)),
                ("weight", Value::from(weight)),
            ]))
        })
        .collect::<Result<Vec<_>, Nack>>()?;
    at.done(&w)?;
    Ok(Value::Sequence(clusters))
}

/// `(max_stream_duration, max_grpc_timeout)`.
fn stream_duration(
    d: Option<rds::route_action::MaxStreamDuration>,
    at: &At<'_>,
) -> Result<(Value, Value), Nack> {
    let Some(mut d) = d else {
        return Ok((Value::Null, Value::Null));
    };
    let max = duration(&d.max_stream_duration.take(), at, "max_stream_duration")?;
    let grpc = duration(
        &d.grpc_timeout_header_max.take(),
        at,
        "grpc_timeout_header_max",
    )?;
    at.done(&d)?;
    Ok((max, grpc))
}

/// Envoy's `num_retries` counts retries after the first try, as attache's `attempts`
/// does; its default is 1.
fn retries(p: Option<rds::RetryPolicy>, at: &At<'_>) -> Result<Value, Nack> {
    let Some(mut p) = p else {
        return Ok(Value::Null);
    };
    let on: Vec<Value> = std::mem::take(&mut p.retry_on)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(string)
        .collect();
    let attempts = p.num_retries.take().map_or(1, |n| u64::from(n.value));
    let codes: Vec<Value> = std::mem::take(&mut p.retriable_status_codes)
        .into_iter()
        .map(|c| Value::from(u64::from(c)))
        .collect();
    let per_try = duration(&p.per_try_timeout.take(), at, "per_try_timeout")?;
    at.done(&p)?;
    Ok(map([
        ("attempts", Value::from(attempts)),
        ("retry_on", Value::Sequence(on)),
        (
            "retriable_status_codes",
            if codes.is_empty() {
                Value::Null
            } else {
                Value::Sequence(codes)
            },
        ),
        ("per_try_timeout", per_try),
    ]))
}

fn upgrades(configs: Vec<rds::route_action::UpgradeConfig>, at: &At<'_>) -> Result<Value, Nack> {
    let mut out = Vec::new();
    for (i, mut u) in configs.into_iter().enumerate() {
        let at = at.item("upgrade_configs", i);
        let kind = std::mem::take(&mut u.upgrade_type).to_ascii_lowercase();
        if u.enabled.take().is_none_or(|e| e.value) {
            out.push(string(&kind));
        }
        at.done(&u)?;
    }
    Ok(if out.is_empty() {
        Value::Null
    } else {
        Value::Sequence(out)
    })
}

fn mirrors(
    policies: Vec<rds::route_action::RequestMirrorPolicy>,
    at: &At<'_>,
) -> Result<Value, Nack> {
    use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType as D;
    let mut out = Vec::new();
    for (i, mut m) in policies.into_iter().enumerate() {
        let at = at.item("request_mirror_policies", i);
        let cluster = std::mem::take(&mut m.cluster);
        let percent = match m.runtime_fraction.take() {
            None => Value::Null,
            Some(mut f) => {
                let at = at.at("runtime_fraction");
                let p = f.default_value.take().unwrap_or_default();
                f.runtime_key.clear(); // no runtime layer: the default value is the value
                at.done(&f)?;
                let scale = match D::try_from(p.denominator) {
                    Ok(D::Hundred) => 1.0,
                    Ok(D::TenThousand) => 100.0,
                    Ok(D::Million) => 10_000.0,
                    Err(_) => {
                        return Err(at.nack("default_value.denominator", "unknown denominator"))
                    }
                };
                Value::from(f64::from(p.numerator) / scale)
            }
        };
        m.trace_sampled = None;
        at.done(&m)?;
        out.push(map([("cluster", string(&cluster)), ("percent", percent)]));
    }
    Ok(if out.is_empty() {
        Value::Null
    } else {
        Value::Sequence(out)
    })
}

fn redirect(mut r: rds::RedirectAction, at: &At<'_>) -> Result<Value, Nack> {
    use rds::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as R, SchemeRewriteSpecifier as S,
    };
    let scheme = match r.scheme_rewrite_specifier.take() {
        None | Some(S::HttpsRedirect(false)) => Value::Null,
        Some(S::HttpsRedirect(true)) => string("https"),
        Some(S::SchemeRedirect(s)) => string(&s),
    };
    let (path, prefix) = match r.path_rewrite_specifier.take() {
        None => (Value::Null, Value::Null),
        Some(P::PathRedirect(p)) => (string(&p), Value::Null),
        Some(P::PrefixRewrite(p)) => (Value::Null, string(&p)),
        Some(_) => return Err(at.nack("path_rewrite_specifier", "path_redirect or prefix_rewrite")),
    };
    let code = match R::try_from(std::mem::take(&mut r.response_code)) {
        Ok(R::MovedPermanently) => 301u64,
        Ok(R::Found) => 302,
        Ok(R::SeeOther) => 303,
        Ok(R::TemporaryRedirect) => 307,
        Ok(R::PermanentRedirect) => 308,
        Err(_) => return Err(at.nack("response_code", "unknown response code")),
    };
    let port = std::mem::take(&mut r.port_redirect);
    let value = map([
        ("scheme_redirect", scheme),
        (
            "host_redirect",
            opt_string(&std::mem::take(&mut r.host_redirect)),
        ),
        ("port_redirect", opt((port != 0).then_some(u64::from(port)))),
        ("path_redirect", path),
        ("prefix_rewrite", prefix),
        ("response_code", Value::from(code)),
        (
            "strip_query",
            Value::Bool(std::mem::take(&mut r.strip_query)),
        ),
    ]);
    at.done(&r)?;
    Ok(value)
}

fn direct(mut d: rds::DirectResponseAction, at: &At<'_>) -> Result<Value, Nack> {
    use core::data_source::Specifier;
    let status = std::mem::take(&mut d.status);
    let body = match d.body.take() {
        None => Value::Null,
        Some(mut b) => {
            let v = match b.specifier.take() {
                Some(Specifier::InlineString(s)) => string(&s),
                Some(Specifier::InlineBytes(bytes)) => match String::from_utf8(bytes) {
                    Ok(s) => string(&s),
                    Err(_) => {
                        return Err(at.nack("body.inline_bytes", "the body must be UTF-8 text"))
                    }
                },
                _ => return Err(at.nack("body", "an inline body (files are not read for xDS)")),
            };
            at.at("body").done(&b)?;
            v
        }
    };
    at.done(&d)?;
    Ok(map([
        ("status", Value::from(u64::from(status))),
        ("body", body),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_xds::tests_util::{compiles_routes, dur, u32v};

    fn route_to(cluster: &str, m: rds::RouteMatch) -> rds::Route {
        rds::Route {
            r#match: Some(m),
            action: Some(rds::route::Action::Route(rds::RouteAction {
                cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(
                    cluster.into(),
                )),
                timeout: Some(dur(3, 0)),
                retry_policy: Some(rds::RetryPolicy {
                    retry_on: "5xx,connect-failure".into(),
                    num_retries: Some(u32v(2)),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn prefix(p: &str) -> rds::RouteMatch {
        rds::RouteMatch {
            path_specifier: Some(rds::route_match::PathSpecifier::Prefix(p.into())),
            ..Default::default()
        }
    }

    fn config(routes: Vec<rds::Route>) -> rds::RouteConfiguration {
        rds::RouteConfiguration {
            name: "main".into(),
            virtual_hosts: vec![rds::VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn routes_with_matchers_retries_and_redirects_translate_and_compile() {
        let mut api = prefix("/api");
        api.headers = vec![rds::HeaderMatcher {
            name: "x-canary".into(),
            header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::ExactMatch(
                "1".into(),
            )),
            ..Default::default()
        }];
        let redirect = rds::Route {
            r#match: Some(prefix("/old")),
            action: Some(rds::route::Action::Redirect(rds::RedirectAction {
                path_rewrite_specifier: Some(
                    rds::redirect_action::PathRewriteSpecifier::PrefixRewrite("/new".into()),
                ),
                response_code: rds::redirect_action::RedirectResponseCode::PermanentRedirect as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let rc = config(vec![
            route_to("users", api),
            redirect,
            route_to("web", prefix("/")),
        ]);
        let hosts = route_configuration(&rc).expect("translates");
        let routes = &hosts[0].routes;
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].matcher.headers[0].exact.as_deref(), Some("1"));
        let action = routes[0].route.as_ref().expect("route action");
        assert_eq!(action.cluster.as_deref(), Some("users"));
        let retries = action.retries.as_ref().expect("retries");
        assert_eq!(
            (retries.attempts, retries.retry_on.clone()),
            (2, vec!["5xx".to_string(), "connect-failure".to_string()])
        );
        assert_eq!(
            routes[1].redirect.as_ref().and_then(|r| r.response_code),
            Some(308)
        );
        compiles_routes(
            &route_configuration_value(&rc).expect("translates"),
            &["users", "web"],
        );
    }

    #[test]
    fn what_attache_cannot_honour_is_refused_by_field() {
        let nack = |rc: rds::RouteConfiguration| route_configuration(&rc).expect_err("refused");
        let mut r = route_to("a", prefix("/"));
        r.decorator = Some(Default::default());
        let n = nack(config(vec![r]));
        assert_eq!(
            (n.resource.as_str(), n.field.as_str()),
            ("main", "virtual_hosts[0].routes[0].decorator")
        );
        let mut r = route_to("a", prefix("/"));
        if let Some(rds::route::Action::Route(a)) = r.action.as_mut() {
            a.hash_policy = vec![Default::default()];
        }
        assert_eq!(
            nack(config(vec![r])).field,
            "virtual_hosts[0].routes[0].route.hash_policy"
        );
        let mut rc = config(vec![route_to("a", prefix("/"))]);
        rc.virtual_hosts[0].require_tls = 1;
        assert_eq!(nack(rc).field, "virtual_hosts[0].require_tls");
        let mut m = prefix("/");
        m.case_sensitive = Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
        assert_eq!(
            nack(config(vec![route_to("a", m)])).field,
            "virtual_hosts[0].routes[0].match.case_sensitive"
        );
    }
}
