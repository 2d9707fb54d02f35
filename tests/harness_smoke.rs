//! Smoke tests for the integration-test harness in `tests/common`.

mod common;

use common::{PgServer, S3Server, seed_sample_db};
use futures::StreamExt;

#[test]
fn postgres_seed_and_checksums() {
    let mut pg = PgServer::start();
    assert!(pg.port() > 0);
    assert_eq!(
        pg.url("app"),
        format!("postgres://postgres@127.0.0.1:{}/app", pg.port())
    );

    seed_sample_db(&pg, "app", 500);
    assert_eq!(
        pg.table_names("app"),
        ["audit.events", "public.customers", "public.orders"]
    );
    assert_eq!(pg.psql("app", "select count(*) from public.orders"), "1000");
    assert_eq!(
        pg.psql("app", "select count(*) from public.customer_totals"),
        "500"
    );

    let first = pg.table_checksums("app");
    assert_eq!(first.len(), 3);
    assert!(first["public.customers"].starts_with("500:"), "{first:?}");
    assert_eq!(first, pg.table_checksums("app"), "checksums must be stable");

    pg.psql(
        "app",
        "update public.orders set status = 'refunded' where id = 7",
    );
    let second = pg.table_checksums("app");
    assert_ne!(first["public.orders"], second["public.orders"]);
    assert_eq!(first["public.customers"], second["public.customers"]);
    assert_eq!(first["audit.events"], second["audit.events"]);

    // Seeding is deterministic: a second database gets identical contents.
    pg.create_db("copy");
    seed_sample_db(&pg, "copy", 500);
    assert_eq!(first, pg.table_checksums("copy"));

    assert_eq!(pg.terminate_backends("app"), 0);
    pg.drop_db("copy");
    assert!(!pg.db_exists("copy"));

    let data_dir = pg.data_dir();
    pg.stop();
    assert!(!pg.is_running());
    drop(pg);
    assert!(!data_dir.exists(), "temp dir removed on drop");
}

async fn exercise_s3(s3: &S3Server) {
    s3.create_bucket("smoke").await;
    s3.put("smoke", "a/one.txt", b"one".to_vec()).await;
    s3.put("smoke", "a/two.txt", b"two".to_vec()).await;
    s3.put("smoke", "b/three.bin", vec![7u8; 70_000]).await;

    assert_eq!(
        s3.list_keys("smoke", "").await,
        ["a/one.txt", "a/two.txt", "b/three.bin"]
    );
    assert_eq!(
        s3.list_keys("smoke", "a/").await,
        ["a/one.txt", "a/two.txt"]
    );
    assert_eq!(s3.get("smoke", "a/two.txt").await, b"two");
    assert_eq!(s3.get("smoke", "b/three.bin").await, vec![7u8; 70_000]);

    // Pagination: more keys than one page of 1000.
    let client = s3.client().await;
    let results: Vec<_> = futures::stream::iter(0..1005)
        .map(|i| {
            client
                .put_object()
                .bucket("smoke")
                .key(format!("many/{i:05}"))
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
                .send()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.expect("put many/*");
    }
    let many = s3.list_keys("smoke", "many/").await;
    assert_eq!(many.len(), 1005);
    assert_eq!(many[1004], "many/01004");
}

#[tokio::test]
async fn moto_basics() {
    let s3 = S3Server::moto();
    assert_eq!(s3.kind(), "moto");
    assert!(s3.supports_multipart_listing());
    exercise_s3(&s3).await;

    assert_eq!(s3.open_multipart_uploads("smoke").await, 0);
    let client = s3.client().await;
    client
        .create_multipart_upload()
        .bucket("smoke")
        .key("big/unfinished")
        .send()
        .await
        .expect("create_multipart_upload");
    assert_eq!(s3.open_multipart_uploads("smoke").await, 1);
}

#[tokio::test]
async fn s3s_fs_basics() {
    let s3 = S3Server::s3s_fs();
    assert_eq!(s3.kind(), "s3s-fs");
    assert!(!s3.supports_multipart_listing());
    exercise_s3(&s3).await;
    assert_eq!(s3.open_multipart_uploads("smoke").await, 0);

    let on_disk = s3.data_dir().unwrap().join("smoke/a/one.txt");
    assert_eq!(std::fs::read(on_disk).unwrap(), b"one");

    // s3s-fs verifies SigV4: a wrong secret is rejected.
    let bad = s3.client_with_credentials(s3.access_key(), "not-the-secret");
    let err = bad
        .list_objects_v2()
        .bucket("smoke")
        .send()
        .await
        .expect_err("wrong secret must be rejected");
    let msg = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err));
    assert!(msg.contains("403") || msg.contains("Signature"), "{msg}");
}
