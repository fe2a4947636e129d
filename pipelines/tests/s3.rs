//! The lake on a real S3-compatible server (moto, started by the test command as
//! `TEST_WEIR_S3_ENDPOINT`): multipart upload of a large object, ranged Parquet reads, list
//! and delete. Credentials come from the environment like in production. When
//! `TEST_WEIR_REQUIRE_S3` is set, a missing endpoint fails instead of skipping.

use std::collections::HashMap;

use weir_pipelines::lake::{Lake, LakeRetry};

fn endpoint() -> Option<String> {
    match std::env::var("TEST_WEIR_S3_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) => {
            assert!(
                std::env::var_os("TEST_WEIR_REQUIRE_S3").is_none(),
                "TEST_WEIR_REQUIRE_S3 is set but TEST_WEIR_S3_ENDPOINT is not"
            );
            eprintln!("TEST_WEIR_S3_ENDPOINT unset: S3 test skipped");
            None
        }
    }
}

async fn bucket(endpoint: &str) -> String {
    let name = format!(
        "weir-rs-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{name}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    name
}

fn options(endpoint: &str) -> HashMap<String, String> {
    [
        ("aws_endpoint", endpoint),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
        ("aws_virtual_hosted_style_request", "false"),
        ("aws_access_key_id", "weir-test"),
        ("aws_secret_access_key", "weir-test-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_come_back_whole() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = bucket(&endpoint).await;
    let lake = Lake::open(&format!("s3://{bucket}/lake"), &options(&endpoint)).unwrap();
    // 40 MiB of a non-repeating pattern: five 8 MiB parts.
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    lake.put("tenant=t/signal=logs/big.bin", big.clone())
        .await
        .unwrap();
    assert_eq!(
        lake.size("tenant=t/signal=logs/big.bin").await.unwrap(),
        big.len() as u64
    );
    let back = lake.get("tenant=t/signal=logs/big.bin").await.unwrap();
    assert!(
        back.as_ref() == big.as_slice(),
        "the object came back different"
    );
    lake.put("tenant=t/signal=logs/small.bin", b"hello".to_vec())
        .await
        .unwrap();
    let mut keys: Vec<String> = lake
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "tenant=t/signal=logs/big.bin",
            "tenant=t/signal=logs/small.bin"
        ]
    );
    lake.delete("tenant=t/signal=logs/big.bin").await.unwrap();
    lake.delete("tenant=t/signal=logs/big.bin").await.unwrap();
    assert!(!lake.exists("tenant=t/signal=logs/big.bin").await.unwrap());
}

#[tokio::test]
async fn unknown_options_and_unreachable_stores_fail_clearly() {
    let mut opts = options("http://127.0.0.1:9");
    opts.insert("aws_no_such_option".into(), "1".into());
    let err = Lake::open("s3://b/lake", &opts).unwrap_err().to_string();
    assert!(err.contains("aws_no_such_option"), "{err}");
    opts.remove("aws_no_such_option");
    let retry = LakeRetry {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(2),
        init_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(50),
    };
    let lake = Lake::open_with("s3://b/lake", &opts, retry).unwrap();
    let err = lake.put("k", b"x".to_vec()).await.unwrap_err().to_string();
    assert!(
        err.contains("127.0.0.1:9") || err.to_lowercase().contains("connect"),
        "{err}"
    );
}

/// The multipart uploads in progress in a bucket (S3 ListMultipartUploads), by key.
async fn uploads_in_progress(endpoint: &str, bucket: &str) -> Vec<String> {
    let xml = reqwest::Client::new()
        .get(format!("{endpoint}/{bucket}?uploads"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

/// A writer given up on, by `abort` (a failed compaction) or by being dropped mid-upload (a
/// compaction cancelled at shutdown), leaves no multipart upload's parts in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_leave_no_parts() {
    use tokio::io::AsyncWriteExt;
    let Some(endpoint) = endpoint() else { return };
    let bucket = bucket(&endpoint).await;
    let lake = Lake::open(&format!("s3://{bucket}/lake"), &options(&endpoint)).unwrap();
    // Over the writer's 16 MiB buffer: the upload goes multipart.
    let chunk: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();

    let mut aborted = lake.writer("tenant=t/signal=logs/aborted.parquet");
    aborted.write_all(&chunk).await.unwrap();
    aborted.flush().await.unwrap();
    assert_eq!(
        uploads_in_progress(&endpoint, &bucket).await,
        ["lake/tenant=t/signal=logs/aborted.parquet"],
        "the write began a multipart upload"
    );
    aborted.abort().await.unwrap();
    assert!(uploads_in_progress(&endpoint, &bucket).await.is_empty());

    let mut dropped = lake.writer("tenant=t/signal=logs/dropped.parquet");
    dropped.write_all(&chunk).await.unwrap();
    dropped.flush().await.unwrap();
    assert_eq!(uploads_in_progress(&endpoint, &bucket).await.len(), 1);
    drop(dropped);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !uploads_in_progress(&endpoint, &bucket).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped writer's upload was not aborted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        lake.list("").await.unwrap().is_empty(),
        "no object was completed"
    );
}
