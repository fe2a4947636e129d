//! `[sources.datadog]`: the keys every HTTP source has ([`HttpSourceConfig`]), listening on
//! 8282.

use crate::contract::SourceContext;
use crate::http::{HttpLimits, HttpSourceConfig, HttpSourceKind};

/// The Datadog Agent intake source.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DatadogSource;

impl HttpSourceKind for DatadogSource {
    const NAME: &'static str = "datadog";
    const WHAT: &'static str = "Datadog intake";
    const ADDRESS: &'static str = "0.0.0.0:8282";
    const BATCH_SOURCES: &'static [&'static str] = &[super::service::SOURCE];

    fn routes(ctx: &SourceContext, limits: HttpLimits) -> axum::Router {
        super::service::routes(ctx, limits)
    }
}

/// `[sources.datadog]`.
pub type DatadogConfig = HttpSourceConfig<DatadogSource>;
