//! Receiving a request body: hashing (MD5 for the ETag, plus any checksum the client
//! declared), buffering it in memory and spilling it to a new blob's temporary file in
//! [`SPILL`]-sized writes past the page cache (`direct.rs`), then verifying it. A body that
//! never reached the file and fits [`INLINE_BODY_MAX`] goes inline into its index row; any
//! other is published as a file.

use std::io::Write;
use std::sync::Arc;

use futures_util::StreamExt;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::dto::{ChecksumAlgorithm, StreamingBlob};
use s3s::{S3Error, S3Result, s3_error};

use super::blobs::{Blobs, new_id};
use super::body::{Body, INLINE_BODY_MAX};
use super::direct::{ALIGN, AlignedBuf, DirectFile};
use crate::Error;

/// Bodies up to this size stay in memory until they are published.
pub(crate) const SPILL: usize = 4 * 1024 * 1024;

// An inline body is one that was never spilled; a spill is a whole number of blocks.
const _: () = assert!(INLINE_BODY_MAX < SPILL && SPILL.is_multiple_of(ALIGN));

/// Bodies past this size are hashed on a thread of their own.
const PIPELINE: u64 = 1024 * 1024;

/// The checksums a client declared for a body (headers; trailers are read at the end).
#[derive(Debug, Default, Clone)]
pub(crate) struct Declared {
    pub(crate) algorithm: Option<ChecksumAlgorithm>,
    pub(crate) crc32: Option<String>,
    pub(crate) crc32c: Option<String>,
    pub(crate) sha1: Option<String>,
    pub(crate) sha256: Option<String>,
    pub(crate) crc64nvme: Option<String>,
    pub(crate) content_md5: Option<String>,
}

/// A body received into a blob that is written but not yet published.
pub(crate) struct Received {
    blobs: Arc<Blobs>,
    id: String,
    /// The temporary file, once the first spill has created it (and while no spill has it).
    file: Option<DirectFile>,
    /// Whether the temporary file exists (to be removed unless published).
    created: bool,
    /// What has not been spilled.
    buf: AlignedBuf,
    pub(crate) size: u64,
    /// Unquoted MD5 hex.
    pub(crate) md5: String,
    published: bool,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("id", &self.id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Received {
    /// Writes what is buffered, fsyncs, and moves the file to its final place; returns
    /// the blob id. Blocking.
    pub(crate) fn publish(mut self) -> crate::Result<String> {
        let file = match self.file.take() {
            Some(f) => f.finish(self.buf.as_slice())?,
            None => {
                let mut f = self.blobs.create_tmp(&self.id)?;
                self.created = true;
                f.write_all(self.buf.as_slice())
                    .map_err(Error::io(&self.id))?;
                f
            }
        };
        self.blobs.publish(&self.id, file)?;
        self.published = true;
        Ok(self.id.clone())
    }

    /// Whether the body goes inline in its index row ([`Received::into_body`] then does no
    /// I/O).
    pub(crate) fn is_inline(&self) -> bool {
        !self.created && self.size <= INLINE_BODY_MAX as u64
    }

    /// The body as its index row will hold it: inline when it is small enough (nothing is
    /// written to disk), else published as a file ([`Received::publish`]). Blocking.
    pub(crate) fn into_body(self) -> crate::Result<Body> {
        if self.is_inline() {
            return Ok(Body::Inline(bytes::Bytes::copy_from_slice(
                self.buf.as_slice(),
            )));
        }
        self.publish().map(Body::File)
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if !self.published && self.created {
            self.blobs.discard_tmp(&self.id);
        }
    }
}

fn hasher_for(d: &Declared) -> S3Result<ChecksumHasher> {
    let mut h = ChecksumHasher::default();
    if d.crc32.is_some() {
        h.crc32 = Some(Default::default());
    }
    if d.crc32c.is_some() {
        h.crc32c = Some(Default::default());
    }
    if d.sha1.is_some() {
        h.sha1 = Some(Default::default());
    }
    if d.sha256.is_some() {
        h.sha256 = Some(Default::default());
    }
    if d.crc64nvme.is_some() {
        h.crc64nvme = Some(Default::default());
    }
    if let Some(alg) = &d.algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => h.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => h.crc32c = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => h.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => h.sha256 = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => h.crc64nvme = Some(Default::default()),
            other => {
                return Err(s3_error!(
                    InvalidArgument,
                    "unsupported checksum algorithm `{other}`"
                ));
            }
        }
    }
    Ok(h)
}

fn check(name: &str, declared: Option<&String>, computed: Option<&String>) -> S3Result<()> {
    match (declared, computed) {
        (Some(want), Some(got)) if want != got => Err(s3_error!(
            BadDigest,
            "the {name} you specified did not match the calculated checksum"
        )),
        _ => Ok(()),
    }
}

fn io_err(e: Error) -> S3Error {
    super::s3_types::internal(e)
}

/// Reads `body` to its end into a new (unpublished) blob and verifies its digests.
pub(crate) async fn receive(
    blobs: &Arc<Blobs>,
    body: Option<StreamingBlob>,
    mut declared: Declared,
    trailers: Option<s3s::TrailingHeaders>,
) -> S3Result<Received> {
    let mut hasher = hasher_for(&declared)?;
    let mut md5 = Md5::new();
    let mut rx = Received {
        blobs: Arc::clone(blobs),
        id: new_id(),
        file: None,
        created: false,
        buf: AlignedBuf::default(),
        size: 0,
        md5: String::new(),
        published: false,
    };
    // Small bodies are hashed inline. Past `PIPELINE`, the digests move to a thread of their
    // own fed chunk by chunk, and each spill to disk goes on while the next chunks arrive:
    // receiving (and s3s's SHA-256 of a signed payload), hashing and writing then use
    // separate cores.
    let mut digests: Option<Digests> = None;
    let mut spilling: Option<Spill> = None;
    let read: S3Result<()> = 'read: {
        let Some(mut body) = body else {
            break 'read Ok(());
        };
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    break 'read Err(s3_error!(IncompleteBody, "reading the body failed: {e}"));
                }
            };
            rx.size += chunk.len() as u64;
            match &digests {
                Some(d) => d.feed(chunk.clone()).await,
                None if rx.size > PIPELINE => {
                    let d = Digests::start(std::mem::take(&mut md5), std::mem::take(&mut hasher));
                    d.feed(chunk.clone()).await;
                    digests = Some(d);
                }
                None => {
                    md5.update(&chunk);
                    hasher.update(&chunk);
                }
            }
            let mut rest: &[u8] = &chunk;
            while !rest.is_empty() {
                let n = rx.buf.extend_up_to(rest, SPILL);
                rest = &rest[n..];
                if rx.buf.len() < SPILL {
                    break;
                }
                // One spill in flight at a time: the previous one gives its file (and its
                // buffer, which takes the next bytes) back first.
                let spare = match spilling.take() {
                    Some(prev) => match joined(prev).await {
                        Ok((file, mut buf)) => {
                            rx.file = Some(file);
                            buf.clear();
                            buf
                        }
                        Err(e) => break 'read Err(e),
                    },
                    None => AlignedBuf::default(),
                };
                let full = std::mem::replace(&mut rx.buf, spare);
                let file = rx.file.take();
                rx.created = true;
                let (blobs, id) = (Arc::clone(blobs), rx.id.clone());
                spilling = Some(tokio::task::spawn_blocking(move || -> crate::Result<_> {
                    let mut file = match file {
                        Some(f) => f,
                        None => blobs.create_tmp_direct(&id)?,
                    };
                    file.write_block(&full)?;
                    Ok((file, full))
                }));
            }
        }
        Ok(())
    };
    // The spill under way ends before anything else, so that its file is discarded with
    // `rx` if the body failed.
    if let Some(prev) = spilling.take() {
        let spilled = joined(prev).await;
        match spilled {
            Ok((file, _)) => rx.file = Some(file),
            Err(e) if read.is_ok() => return Err(e),
            Err(_) => {}
        }
    }
    read?;
    if let Some(d) = digests {
        (md5, hasher) = d.finish().await?;
    }
    let digest = md5.finalize();
    rx.md5 = hex::encode(digest);
    if let Some(content_md5) = &declared.content_md5 {
        let want = base64_simd_decode(content_md5)
            .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        if want != digest.as_slice() {
            return Err(s3_error!(
                BadDigest,
                "the Content-MD5 you specified did not match what we received"
            ));
        }
    }
    if let Some(trailers) = trailers.and_then(|t| t.take()) {
        let get = |name: &str| {
            trailers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        declared.crc32 = get("x-amz-checksum-crc32").or(declared.crc32);
        declared.crc32c = get("x-amz-checksum-crc32c").or(declared.crc32c);
        declared.sha1 = get("x-amz-checksum-sha1").or(declared.sha1);
        declared.sha256 = get("x-amz-checksum-sha256").or(declared.sha256);
        declared.crc64nvme = get("x-amz-checksum-crc64nvme").or(declared.crc64nvme);
    }
    let sums = hasher.finalize();
    check(
        "CRC32",
        declared.crc32.as_ref(),
        sums.checksum_crc32.as_ref(),
    )?;
    check(
        "CRC32C",
        declared.crc32c.as_ref(),
        sums.checksum_crc32c.as_ref(),
    )?;
    check("SHA1", declared.sha1.as_ref(), sums.checksum_sha1.as_ref())?;
    check(
        "SHA256",
        declared.sha256.as_ref(),
        sums.checksum_sha256.as_ref(),
    )?;
    check(
        "CRC64NVME",
        declared.crc64nvme.as_ref(),
        sums.checksum_crc64nvme.as_ref(),
    )?;
    Ok(rx)
}

/// A write of buffered body bytes to the blob's temporary file, under way; it gives the file
/// (and the buffer) back.
type Spill = tokio::task::JoinHandle<crate::Result<(DirectFile, AlignedBuf)>>;

/// A spill's result: its file (and buffer) back, or the error.
async fn joined(spill: Spill) -> S3Result<(DirectFile, AlignedBuf)> {
    spill.await.map_err(|e| io_err(e.into()))?.map_err(io_err)
}

/// Where a large body's digests are computed: a blocking thread fed through a bounded
/// channel (a slow hasher holds the receiver back instead of buffering the body).
struct Digests {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    done: tokio::task::JoinHandle<(Md5, ChecksumHasher)>,
}

impl Digests {
    fn start(mut md5: Md5, mut hasher: ChecksumHasher) -> Digests {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let done = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                md5.update(&chunk);
                hasher.update(&chunk);
            }
            (md5, hasher)
        });
        Digests { tx, done }
    }

    /// Hands a chunk over, waiting while the hasher is 64 chunks behind.
    async fn feed(&self, chunk: bytes::Bytes) {
        // The hasher only stops when the channel closes, which `finish` does.
        let _ = self.tx.send(chunk).await;
    }

    async fn finish(self) -> S3Result<(Md5, ChecksumHasher)> {
        drop(self.tx);
        self.done.await.map_err(|e| io_err(e.into()))
    }
}

fn base64_simd_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}
