//! The outbox against a real control plane (the HTTP API over a sled index) whose token may
//! write tenant `a` only: one refused segment, a tenant the token may not write, or an
//! unreadable record hold back no other segment; what is refused for good is kept with its
//! reason and goes back to the outbox at the next start; a tenant the token may not write is
//! retried, and registers once the control plane's tokens allow it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;
use weir_catalog::layout::{segment_record, FileFacts, Partition, SegmentKey};
use weir_catalog::{Catalog, SegmentQuery, SegmentRecord};
use weir_control_plane::api::{ApiState, ApiToken, Auth, Scope};
use weir_control_plane::{RemoteCatalog, RemoteConfig, SledCatalog};
use weir_pipelines::buffer::{Buffer, Ledger, SledBuffer, SledBufferConfig};
use weir_pipelines::metrics::Metrics;
use weir_pipelines::outbox::Outbox;
use weir_schema::Signal;

fn segment(tenant: &str, services: Vec<String>) -> SegmentRecord {
    let key = SegmentKey::new(
        tenant,
        Signal::Logs,
        Partition { hour: 480_000 },
        Uuid::now_v7(),
    );
    segment_record(
        &key,
        FileFacts {
            rows: 10,
            bytes: 100,
            min_timestamp: 480_000 * 3_600_000_000_000,
            max_timestamp: 480_000 * 3_600_000_000_000 + 9,
            services,
            schema_version: weir_schema::SCHEMA_VERSION,
        },
        "agent-1",
        1,
    )
}

fn token(tenants: &[&str]) -> Vec<ApiToken> {
    vec![ApiToken {
        token: "tenant-a-writer-token".into(),
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        scopes: vec![Scope::Read, Scope::Write],
    }]
}

/// A sled index behind the API, its tokens, and a client whose token writes tenant `a` only.
async fn control_plane(dir: &std::path::Path) -> (Arc<dyn Catalog>, Arc<Auth>, Arc<dyn Catalog>) {
    let index: Arc<dyn Catalog> = Arc::new(SledCatalog::open(&dir.join("index")).unwrap());
    let auth = Arc::new(Auth::new(token(&["a"])));
    let app = weir_control_plane::api::routes(
        ApiState {
            catalog: index.clone(),
            auth: auth.clone(),
        },
        16 << 20,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = RemoteCatalog::new(&RemoteConfig {
        url: format!("http://{address}"),
        token: Some("tenant-a-writer-token".into()),
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    (index, auth, Arc::new(client))
}

fn put(buffer: &SledBuffer, id: &[u8], value: &[u8]) {
    buffer.ledger_put(Ledger::Outbox, id, value).unwrap();
}

#[tokio::test]
async fn refused_segments_are_kept_aside_and_hold_back_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (index, auth, client) = control_plane(dir.path()).await;
    let buffer = Arc::new(
        SledBuffer::open(&SledBufferConfig {
            path: dir.path().join("buffer"),
            max_bytes: 1 << 30,
        })
        .unwrap(),
    );
    let ok1 = segment("a", vec!["api".into()]);
    // 100,000 distinct services: bounded to a record that still registers.
    let many = segment(
        "a",
        weir_catalog::bound_services((0..100_000).map(|i| format!("service-{i}"))),
    );
    let forbidden = segment("b", vec![]);
    let mut invalid = segment("a", vec![]);
    invalid.object_key = "tenant=b/signal=logs/dt=2024-10-04/hour=00/x.parquet".into();
    for s in [&ok1, &many, &forbidden, &invalid] {
        put(&buffer, s.id.as_bytes(), &serde_json::to_vec(s).unwrap());
    }
    put(&buffer, b"garbage", b"{not json");

    let metrics = Metrics::new();
    let outbox = Outbox::new(
        buffer.clone(),
        client,
        metrics.clone(),
        Arc::new(Notify::new()),
    );
    // Tenant a's good segments register; the invalid one and the unreadable record are set
    // aside; tenant b (forbidden to this token) waits.
    assert_eq!(outbox.send_once().await.unwrap(), 4);
    assert_eq!(outbox.len(), 1);

    let listed = index
        .list(&SegmentQuery {
            tenant: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .segments;
    let mut ids: Vec<Uuid> = listed.iter().map(|s| s.id).collect();
    ids.sort();
    let mut want = vec![ok1.id, many.id];
    want.sort();
    assert_eq!(ids, want);
    let filtered = index
        .list(&SegmentQuery {
            tenant: "a".into(),
            service: Some("service-99999".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .segments;
    assert_eq!(filtered.iter().map(|s| s.id).collect::<Vec<_>>(), [many.id]);

    let refused = Outbox::refused(buffer.as_ref(), 10);
    assert_eq!(refused.len(), 2, "{refused:?}");
    let reason = |id: Uuid| {
        refused
            .iter()
            .find(|r| r.record.get("id").and_then(|v| v.as_str()) == Some(&id.to_string()))
            .map(|r| r.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason(invalid.id).contains("object_key"), "{refused:?}");
    assert!(
        refused.iter().any(|r| r.reason.contains("unreadable")),
        "{refused:?}"
    );
    assert!(metrics.render().contains("weir_outbox_refused_segments 2"));

    // Tenant b is retried (403 is not the segment's fault) until the control plane's tokens
    // allow it, then registers without a restart.
    assert!(matches!(
        outbox.send_once().await,
        Err(weir_catalog::CatalogError::Forbidden(_))
    ));
    auth.replace(token(&["a", "b"]));
    assert_eq!(outbox.send_once().await.unwrap(), 1);
    assert!(outbox.is_empty());

    // A second record of an object the index already holds (reconciliation rebuilds one
    // from the footer, with another created_at) is a 409 that counts as registered.
    let mut again = ok1.clone();
    again.created_at += 1;
    put(
        &buffer,
        again.id.as_bytes(),
        &serde_json::to_vec(&again).unwrap(),
    );
    assert_eq!(outbox.send_once().await.unwrap(), 1);
    assert_eq!(buffer.ledger_len(Ledger::OutboxRefused), 2);

    // The next start sends the refused segments again; the unreadable record stays aside.
    assert_eq!(outbox.requeue_refused().await.unwrap(), 1);
    assert_eq!(outbox.len(), 1);
    assert_eq!(buffer.ledger_len(Ledger::OutboxRefused), 1);
    assert_eq!(outbox.send_once().await.unwrap(), 1);
    assert_eq!(buffer.ledger_len(Ledger::OutboxRefused), 2);
}
