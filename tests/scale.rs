//! Scale without the sizes: an object larger than `max_parts` × `part_size` grows its part
//! size by itself (S3's 10,000-part limit, here lowered to 4 so a 40 MiB object shows it).

mod common;

use common::{S3Server, run_stowage, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_beyond_max_parts_times_part_size_grows_its_parts() {
    let s3 = S3Server::moto();
    s3.create_bucket("scale").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("s3_secret");
    std::fs::write(&secret, s3.secret_key()).expect("secret");
    // Incompressible: 40 MiB stored, 8 parts of 5 MiB at a fixed size, 4 allowed.
    let data: Vec<u8> = {
        use sha2::Digest;
        let mut out = Vec::with_capacity(40 << 20);
        let mut block = sha2::Sha256::digest(b"seed").to_vec();
        while out.len() < 40 << 20 {
            block = sha2::Sha256::digest(&block).to_vec();
            out.extend_from_slice(&block);
        }
        out
    };
    let blob = dir.path().join("blob.bin");
    std::fs::write(&blob, &data).expect("blob");
    let restored = dir.path().join("restored.bin");
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!(
            "[destinations.s3]\ntype = \"s3\"\nbucket = \"scale\"\nendpoint = \"{}\"\nforce_path_style = true\naccess_key_id = \"{}\"\nsecret_access_key_file = \"{}\"\nregion = \"{}\"\npart_size = \"5MiB\"\nmax_parts = {{MAX}}\n\n[jobs.app]\nschedule = \"0 3 * * *\"\ndestinations = [\"s3\"]\ncompression = \"none\"\n\n[[jobs.app.sources]]\ntype = \"command\"\nname = \"blob\"\ndump = [\"cat\", \"{}\"]\nrestore = [\"sh\", \"-c\", \"cat > {}\"]\n",
            s3.endpoint(),
            s3.access_key(),
            secret.display(),
            s3.region(),
            blob.display(),
            restored.display()
        ),
    )
    .expect("config");
    let body = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, body.replace("{MAX}", "4")).expect("config");
    let out = run_stowage(&config, ["run", "app"]);
    assert!(out.status.success(), "{}", text(&out));

    // The stored object is a multipart upload of at most 4 parts (its ETag says how many).
    let keys = s3.list_keys("scale", "app/").await;
    let key = keys
        .iter()
        .find(|k| k.ends_with("/blob.bin"))
        .unwrap_or_else(|| panic!("the dump object in {keys:?}"))
        .clone();
    let head = s3
        .client()
        .await
        .head_object()
        .bucket("scale")
        .key(&key)
        .send()
        .await
        .expect("head");
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let parts: u32 = etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("a multipart ETag: {etag}"));
    assert!((2..=4).contains(&parts), "{parts} parts ({etag})");
    assert_eq!(head.content_length(), Some(data.len() as i64));

    let out = run_stowage(&config, ["restore", "app", "--to", "x"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(&restored).expect("restored") == data,
        "round trip"
    );

    // Where the store's limit would be passed even so, the run fails naming the fix.
    let tiny = dir.path().join("tiny.toml");
    std::fs::write(
        &tiny,
        std::fs::read_to_string(&config)
            .expect("config")
            .replace("max_parts = 4", "max_parts = 2"),
    )
    .expect("config");
    let out = run_stowage(&tiny, ["run", "app"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("outgrew 2 parts") && said.contains("raise part_size"),
        "{said}"
    );
}
