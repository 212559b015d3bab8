//! Checkpoint storage in an S3-compatible object store, through the `object_store` crate.
//!
//! A job selects it with a checkpoint directory URL, `--checkpoint-dir s3://bucket/prefix`,
//! once [`register`] has added the `s3` scheme to the runtime's storage registry (the `weir`
//! crate does not depend on this one, so that it compiles without an HTTP and TLS stack).
//! The endpoint, region and credentials come from the environment as
//! `object_store::aws::AmazonS3Builder::from_env` reads them (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_ALLOW_HTTP`, ...); an `http://` endpoint allows plain HTTP unless `AWS_ALLOW_HTTP` says
//! otherwise, and a custom endpoint uses path-style requests unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` says otherwise.
//!
//! Objects are written whole (an S3 PUT or a completed multipart upload is atomic: readers see
//! the old object or the new one), so no temporary names are needed. The checksums are the
//! runtime's (length and xxh3 of the content, kept in the checkpoint's manifest, which is
//! written last), computed while uploading and recomputed from the content when a checkpoint is
//! verified: a damaged object is detected, not trusted.
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use weir_runtime::checkpoint::storage::{register_storage, CheckpointStorage};
use weir_types::{Result, WeirError};

/// Files larger than this are uploaded in parts of this size (S3's minimum part is 5 MiB).
pub const PART_BYTES: usize = 8 << 20;
/// Parts of one file uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Adds the `s3` scheme to the checkpoint storage registry: `--checkpoint-dir s3://bucket/p`.
pub fn register() {
    register_storage(
        "s3",
        Arc::new(|url: &str| {
            let s: Arc<dyn CheckpointStorage> = Arc::new(ObjectStorage::s3_from_env(url)?);
            Ok(s)
        }),
    );
}

/// Checkpoints in an object store, under a prefix.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// Key prefix without leading or trailing '/', possibly empty.
    prefix: String,
    /// For logs: the URL.
    location: String,
    /// Always `Some` but in `drop`.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        // Without blocking: dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.location)
    }
}

fn err(what: String, e: object_store::Error) -> WeirError {
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        _ => std::io::ErrorKind::Other,
    };
    WeirError::io(what, std::io::Error::new(kind, e.to_string()))
}

fn io_err(what: String, e: std::io::Error) -> WeirError {
    WeirError::io(what, e)
}

impl ObjectStorage {
    /// Storage at `s3://bucket/prefix`, configured from the `AWS_*` environment variables.
    pub fn s3_from_env(url: &str) -> Result<Self> {
        let mut b = AmazonS3Builder::from_env().with_url(url);
        let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if let Some(ep) = &endpoint {
            if ep.starts_with("http://") && std::env::var_os("AWS_ALLOW_HTTP").is_none() {
                b = b.with_allow_http(true);
            }
            if std::env::var_os("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
                b = b.with_virtual_hosted_style_request(false);
            }
        }
        if b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
            if let Ok(r) = std::env::var("AWS_REGION") {
                b = b.with_region(r);
            }
        }
        let store = b
            .build()
            .map_err(|e| WeirError::Config(format!("checkpoint storage {url}: {e}")))?;
        let prefix = url
            .split_once("://")
            .map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or(""))
            .unwrap_or("")
            .trim_matches('/')
            .to_string();
        let location = match &endpoint {
            Some(ep) => format!("{url} (at {ep})"),
            None => url.to_string(),
        };
        Self::new(Arc::new(store), &prefix, &location)
    }

    /// Storage in `store` under `prefix`; `location` names it in logs.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, location: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir:object-store")
            .enable_all()
            .build()
            .map_err(|e| io_err("starting the object store's runtime".into(), e))?;
        Ok(ObjectStorage {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            location: location.to_string(),
            rt: Some(rt),
        })
    }

    /// The object key of `path` (relative to the prefix).
    fn key(&self, path: &str) -> ObjPath {
        let path = path.trim_matches('/');
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => ObjPath::from(path),
            (false, true) => ObjPath::from(self.prefix.as_str()),
            (false, false) => ObjPath::from(format!("{}/{path}", self.prefix)),
        }
    }

    /// Runs `f` to completion on the store's runtime, from any thread (also one that is inside
    /// another tokio runtime, where blocking on this one directly is not allowed).
    fn block<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        let rt = self.rt.as_ref().expect("the runtime lives until drop");
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(f))
                    .join()
                    .expect("object store call panicked")
            })
        } else {
            rt.block_on(f)
        }
    }

    /// Streams the object at `path` through `sink`, hashing: (length, xxh3).
    fn read_hashing(
        &self,
        path: &str,
        mut sink: Option<&mut (dyn Write + Send)>,
    ) -> Result<(u64, u64)> {
        let key = self.key(path);
        let what = || format!("reading {} from {}", key, self.location);
        self.block(async {
            let r = self.store.get(&key).await.map_err(|e| err(what(), e))?;
            let mut body = r.into_stream();
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| err(what(), e))?;
                h.update(&chunk);
                n += chunk.len() as u64;
                if let Some(w) = sink.as_mut() {
                    w.write_all(&chunk).map_err(|e| io_err(what(), e))?;
                }
            }
            Ok((n, h.digest()))
        })
    }
}

impl CheckpointStorage for ObjectStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(path);
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        self.block(self.store.put(&key, payload))
            .map(|_| ())
            .map_err(|e| err(format!("writing {key} to {}", self.location), e))
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let key = self.key(path);
        self.block(async { self.store.get(&key).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| err(format!("reading {key} from {}", self.location), e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let key = self.key(prefix);
        let at = (!key.as_ref().is_empty()).then_some(&key);
        let r = self
            .block(self.store.list_with_delimiter(at))
            .map_err(|e| err(format!("listing {key} in {}", self.location), e))?;
        let mut v: Vec<String> = r
            .common_prefixes
            .iter()
            .chain(r.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(String::from))
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let key = self.key(prefix);
        let what = || format!("deleting {key}/… in {}", self.location);
        self.block(async {
            // Everything under `prefix/` (bulk deletes of up to 1000 keys).
            let under = self.store.list(Some(&key)).map_ok(|m| m.location).boxed();
            let mut deleted = self.store.delete_stream(under);
            while let Some(r) = deleted.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(err(what(), e)),
                }
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.location.clone()
    }

    fn delete(&self, path: &str) -> Result<()> {
        let key = self.key(path);
        match self.block(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(format!("deleting {key} in {}", self.location), e)),
        }
    }

    /// Streams `from` up: one PUT when it fits in a part, else a multipart upload of
    /// [`PART_BYTES`] parts, a few in flight; hashed while read.
    fn put_file(&self, path: &str, from: &Path) -> Result<(u64, u64)> {
        let key = self.key(path);
        let what = || format!("uploading {} to {key} in {}", from.display(), self.location);
        let mut f = std::fs::File::open(from).map_err(|e| io_err(what(), e))?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        // Reads up to one part (less only at the end of the file).
        let mut read_part = |h: &mut xxhash_rust::xxh3::Xxh3| -> std::io::Result<Vec<u8>> {
            let mut buf = Vec::with_capacity(PART_BYTES);
            (&mut f).take(PART_BYTES as u64).read_to_end(&mut buf)?;
            h.update(&buf);
            Ok(buf)
        };
        let first = read_part(&mut h).map_err(|e| io_err(what(), e))?;
        let mut n = first.len() as u64;
        if first.len() < PART_BYTES {
            self.block(self.store.put(&key, PutPayload::from(first)))
                .map_err(|e| err(what(), e))?;
            return Ok((n, h.digest()));
        }
        self.block(async {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| err(what(), e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            w.put(Bytes::from(first));
            loop {
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = w.abort().await;
                    return Err(err(what(), e));
                }
                let part = match read_part(&mut h) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(io_err(what(), e));
                    }
                };
                if part.is_empty() {
                    break;
                }
                n += part.len() as u64;
                w.put(Bytes::from(part));
            }
            w.finish().await.map_err(|e| err(what(), e))?;
            Ok(())
        })?;
        Ok((n, h.digest()))
    }

    fn get_file(&self, path: &str, to: &Path) -> Result<(u64, u64)> {
        let what = || format!("writing {}", to.display());
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(to).map_err(|e| io_err(what(), e))?);
        let r = self.read_hashing(path, Some(&mut f))?;
        f.flush().map_err(|e| io_err(what(), e))?;
        Ok(r)
    }

    fn checksum(&self, path: &str) -> Result<(u64, u64)> {
        self.read_hashing(path, None)
    }
}

/// For tests: `s3://BUCKET` of the project's S3-compatible test server, with `AWS_*` set in
/// this process (and so for its children) from the server's `S3_*` variables, and `s3`
/// registered. The server is the one `S3_ENDPOINT` names (`scripts/test` starts it), or one
/// started here through `<repo_root>/scripts/services start s3` with its runtime files under
/// `services_dir` (unless `WEIR_SERVICES_DIR` says otherwise). Panics if there is none: tests
/// that need S3 fail, they do not skip. Call it once per process (e.g. from a `OnceLock`).
pub fn test_server_bucket(repo_root: &Path, services_dir: &str) -> String {
    const KEYS: [&str; 5] = [
        "S3_ENDPOINT",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "S3_BUCKET",
        "S3_REGION",
    ];
    let mut vars = std::collections::BTreeMap::<String, String>::new();
    if std::env::var("S3_ENDPOINT").is_ok_and(|e| !e.is_empty()) {
        for k in KEYS {
            let v = std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
            vars.insert(k.into(), v);
        }
    } else {
        let dir = std::env::var("WEIR_SERVICES_DIR").unwrap_or_else(|_| services_dir.into());
        let out = std::process::Command::new(repo_root.join("scripts/services"))
            .args(["start", "s3"])
            .env("WEIR_SERVICES_DIR", &dir)
            .output()
            .expect("running scripts/services");
        assert!(
            out.status.success(),
            "scripts/services start s3 failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = l.split_once('=') {
                vars.insert(k.into(), v.into());
            }
        }
    }
    std::env::set_var("AWS_ENDPOINT_URL", &vars["S3_ENDPOINT"]);
    std::env::set_var("AWS_ACCESS_KEY_ID", &vars["S3_ACCESS_KEY_ID"]);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &vars["S3_SECRET_ACCESS_KEY"]);
    std::env::set_var("AWS_REGION", &vars["S3_REGION"]);
    register();
    format!("s3://{}", vars["S3_BUCKET"])
}
