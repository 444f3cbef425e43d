//! The compiled-in filters, by YAML name. The config loader asks the registry to
//! validate and build each `filters:` item.

use std::sync::Arc;

use crate::api::{ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, PathSeg};

/// An object-safe view of an [`HttpFilterFactory`].
pub trait DynFactory: Send + Sync {
    fn name(&self) -> &'static str;
    /// Deserialize and validate; every problem at once.
    fn validate(&self, raw: &serde_yaml::Value) -> Vec<ConfigError>;
    /// Deserialize, validate and build.
    fn build(
        &self,
        raw: &serde_yaml::Value,
        cx: &FactoryContext<'_>,
    ) -> Result<Arc<dyn HttpFilter>, Vec<ConfigError>>;
}

struct Erased<F>(std::marker::PhantomData<fn() -> F>);

fn parse<F: HttpFilterFactory>(raw: &serde_yaml::Value) -> Result<F::Config, ConfigError> {
    // An empty value (`- sli:`) means "all defaults".
    let empty = serde_yaml::Value::Mapping(Default::default());
    let raw = if raw.is_null() { &empty } else { raw };
    serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    Some(PathSeg::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        ConfigError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

impl<F: HttpFilterFactory> DynFactory for Erased<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn validate(&self, raw: &serde_yaml::Value) -> Vec<ConfigError> {
        match parse::<F>(raw) {
            Ok(cfg) => F::validate(&cfg),
            Err(e) => vec![e],
        }
    }

    fn build(
        &self,
        raw: &serde_yaml::Value,
        cx: &FactoryContext<'_>,
    ) -> Result<Arc<dyn HttpFilter>, Vec<ConfigError>> {
        let cfg = parse::<F>(raw).map_err(|e| vec![e])?;
        let errs = F::validate(&cfg);
        if !errs.is_empty() {
            return Err(errs);
        }
        F::build(cfg, cx).map_err(|e| vec![e])
    }
}

fn erase<F: HttpFilterFactory>() -> &'static dyn DynFactory {
    // Zero-sized, so leaking is free and happens once per factory per call site.
    Box::leak(Box::new(Erased::<F>(std::marker::PhantomData)))
}

/// Every compiled-in filter, in documentation order.
pub fn all() -> Vec<&'static dyn DynFactory> {
    vec![
        erase::<crate::headers::Factory>(),
        erase::<crate::cookie_audit::Factory>(),
        erase::<crate::sli::Factory>(),
        erase::<crate::web_security::Factory>(),
        erase::<crate::cors::Factory>(),
        erase::<crate::local_rate_limit::Factory>(),
        erase::<crate::grpc_web::Factory>(),
    ]
}

/// The factory for `name`, if compiled in.
pub fn get(name: &str) -> Option<&'static dyn DynFactory> {
    all().into_iter().find(|f| f.name() == name)
}

/// The compiled-in filter names.
pub fn names() -> Vec<&'static str> {
    all().into_iter().map(|f| f.name()).collect()
}
