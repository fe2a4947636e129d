//! `[sources.loki]`: the keys every HTTP source has ([`HttpSourceConfig`]), listening on 3100.

use crate::contract::SourceContext;
use crate::http::{HttpLimits, HttpSourceConfig, HttpSourceKind};

/// The Loki push source.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LokiSource;

impl HttpSourceKind for LokiSource {
    const NAME: &'static str = "loki";
    const WHAT: &'static str = "Loki push";
    const ADDRESS: &'static str = "0.0.0.0:3100";
    const BATCH_SOURCES: &'static [&'static str] = &[super::service::SOURCE];

    fn routes(ctx: &SourceContext, limits: HttpLimits) -> axum::Router {
        super::service::routes(ctx, limits)
    }
}

/// `[sources.loki]`.
pub type LokiConfig = HttpSourceConfig<LokiSource>;
