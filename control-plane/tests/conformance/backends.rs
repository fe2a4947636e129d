//! The implementations the suite runs against.

use std::sync::Arc;
use std::time::Duration;

use weir_control_plane::api::{ApiState, ApiToken, Auth, Scope};
use weir_control_plane::faults::Faults;
use weir_control_plane::{Catalog, PgCatalog, PgConfig, RemoteCatalog, RemoteConfig, SledCatalog};

pub async fn sled() -> Option<(Arc<dyn Catalog>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let cat = SledCatalog::open(dir.path()).unwrap();
    Some((Arc::new(cat), dir))
}

/// A sled index served by the control-plane API on a loopback port, reached through the
/// HTTP client with a token for every tenant and scope.
pub async fn remote() -> Option<(Arc<dyn Catalog>, tempfile::TempDir)> {
    let (inner, dir) = sled().await?;
    let token = "conformance-token";
    let auth = Auth::new(vec![ApiToken {
        token: token.into(),
        tenants: vec!["*".into()],
        scopes: vec![Scope::Read, Scope::Write, Scope::Compact, Scope::Admin],
    }]);
    let app = weir_control_plane::api::routes(
        ApiState {
            catalog: inner,
            auth: Arc::new(auth),
        },
        16 << 20,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = RemoteCatalog::new(&RemoteConfig {
        url: format!("http://{address}"),
        token: Some(token.into()),
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    Some((Arc::new(client), dir))
}

/// The PostgreSQL URL of the test command's cluster; `None` (skip) only when the test command
/// did not promise one (`TEST_WEIR_REQUIRE_PG`).
pub fn pg_url() -> Option<String> {
    match std::env::var("TEST_WEIR_PG_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("TEST_WEIR_REQUIRE_PG").is_none(),
                "TEST_WEIR_REQUIRE_PG is set but TEST_WEIR_PG_URL is not"
            );
            eprintln!("TEST_WEIR_PG_URL unset: PostgreSQL conformance skipped");
            None
        }
    }
}

pub async fn pg() -> Option<(Arc<dyn Catalog>, ())> {
    let url = pg_url()?;
    let cat = PgCatalog::connect(&PgConfig { url, pool_size: 8 })
        .await
        .unwrap();
    Some((Arc::new(cat), ()))
}

/// An index that can be closed and opened again, to look at what a crash leaves behind.
pub enum Store {
    /// A sled database's directory.
    Sled(tempfile::TempDir),
    /// A PostgreSQL URL.
    Pg(String),
}

impl Store {
    /// Opens the index with these fault points.
    pub async fn open(&self, faults: Faults) -> Arc<dyn Catalog> {
        match self {
            Store::Sled(dir) => {
                Arc::new(SledCatalog::open(dir.path()).unwrap().with_faults(faults))
            }
            Store::Pg(url) => Arc::new(
                PgCatalog::connect(&PgConfig {
                    url: url.clone(),
                    pool_size: 4,
                })
                .await
                .unwrap()
                .with_faults(faults),
            ),
        }
    }
}

pub async fn sled_store() -> Option<(Store, ())> {
    Some((Store::Sled(tempfile::tempdir().unwrap()), ()))
}

pub async fn pg_store() -> Option<(Store, ())> {
    Some((Store::Pg(pg_url()?), ()))
}
