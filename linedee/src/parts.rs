//! The parts of a multipart upload: where they come from ([`PartSource`]: bytes, a file read
//! range by range as each part is sent, or a stream read part by part), and the upload of one
//! part with the client's retries.

use std::pin::Pin;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::client::Client;
use crate::error::{Error, Result};

/// Uploads part `number` of `upload_id`, with the client's retries.
pub(crate) async fn upload_part(
    client: Client,
    key: String,
    upload_id: String,
    number: i32,
    body: PartBody,
) -> Result<(CompletedPart, u64)> {
    let inner = &client.inner;
    let len = body.len();
    let crc32 = body.crc32().await?;
    let out = client
        .call("UploadPart", &key, || {
            let (body, key, upload_id, crc32) = (&body, &key, &upload_id, &crc32);
            async move {
                let stream = body
                    .stream()
                    .await
                    .map_err(aws_sdk_s3::error::SdkError::construction_failure)?;
                inner
                    .s3
                    .upload_part()
                    .bucket(&inner.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .checksum_crc32(crc32.as_str())
                    .body(stream)
                    // The part's integrity is its CRC32, a signed header the server checks.
                    // The SHA-256 of a signed payload (which the SDK computes only over plain
                    // HTTP) would hash every byte once more on each side, for no extra
                    // guarantee. Given the CRC32 up front, the SDK sends a file part as a
                    // plain sized body too, not aws-chunked with a trailing checksum, whose
                    // chunks it would sign one by one over plain HTTP.
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
            }
        })
        .await?;
    let part = CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag().map(str::to_owned))
        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
        .build();
    Ok((part, len))
}

/// Where a multipart upload's parts come from.
pub(crate) enum PartSource {
    Bytes(Bytes),
    /// A file of `len` bytes, its parts read as they are sent.
    File {
        path: std::sync::Arc<std::path::PathBuf>,
        len: u64,
        offset: u64,
    },
    Reader(Pin<Box<dyn AsyncRead + Send>>),
    Prefixed(Option<Bytes>, Pin<Box<dyn AsyncRead + Send>>),
}

/// One part's body: in memory, or a range of a file.
pub(crate) enum PartBody {
    Bytes(Bytes),
    File {
        path: std::sync::Arc<std::path::PathBuf>,
        offset: u64,
        len: u64,
    },
}

/// How much a file part's stream reads at a time.
const FILE_PART_BUFFER: usize = 256 * 1024;

impl PartBody {
    fn len(&self) -> u64 {
        match self {
            PartBody::Bytes(b) => b.len() as u64,
            PartBody::File { len, .. } => *len,
        }
    }

    /// The part's CRC32, base64 as `x-amz-checksum-crc32` takes it. A file range is read
    /// once for it, before it is sent; a file that changes in between makes the server
    /// refuse the part (`BadDigest`) rather than store bytes the CRC32 does not cover.
    async fn crc32(&self) -> Result<String> {
        use base64::Engine as _;
        let crc = match self {
            PartBody::Bytes(b) => crc32fast::hash(b),
            PartBody::File { path, offset, len } => {
                let (path, offset, len) = (std::sync::Arc::clone(path), *offset, *len);
                let read = tokio::task::spawn_blocking(move || {
                    file_range_crc32(&path, offset, len).map_err(|source| Error::Io {
                        action: "cannot read",
                        path: path.to_path_buf(),
                        source,
                    })
                });
                read.await
                    .map_err(|e| Error::Body(std::io::Error::other(e)))??
            }
        };
        Ok(base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes()))
    }

    /// The body of one attempt (a file range is opened anew each time).
    async fn stream(&self) -> Result<ByteStream, aws_smithy_types::byte_stream::error::Error> {
        match self {
            PartBody::Bytes(b) => Ok(ByteStream::from(b.clone())),
            PartBody::File { path, offset, len } => {
                ByteStream::read_from()
                    .path(path.as_ref())
                    .offset(*offset)
                    .length(aws_smithy_types::byte_stream::Length::Exact(*len))
                    .buffer_size(FILE_PART_BUFFER)
                    .build()
                    .await
            }
        }
    }
}

impl PartSource {
    /// The next part of at most `size` bytes (every part but the last is exactly `size`).
    pub(crate) async fn next(&mut self, size: usize) -> Result<Option<PartBody>> {
        Ok(match self {
            PartSource::File { path, len, offset } => (*offset < *len).then(|| {
                let part = (*len - *offset).min(size as u64);
                let body = PartBody::File {
                    path: std::sync::Arc::clone(path),
                    offset: *offset,
                    len: part,
                };
                *offset += part;
                body
            }),
            other => other.next_bytes(size).await?.map(PartBody::Bytes),
        })
    }

    /// The next part of an in-memory or streamed body.
    async fn next_bytes(&mut self, size: usize) -> Result<Option<Bytes>> {
        match self {
            PartSource::File { .. } => Ok(None),
            PartSource::Bytes(b) if b.is_empty() => Ok(None),
            PartSource::Bytes(b) => Ok(Some(b.split_to(size.min(b.len())))),
            PartSource::Reader(r) => {
                let chunk = read_up_to(r.as_mut(), size).await?;
                Ok((!chunk.is_empty()).then_some(chunk))
            }
            PartSource::Prefixed(prefix, r) => {
                let mut buf = BytesMut::with_capacity(size);
                if let Some(mut p) = prefix.take() {
                    if p.len() > size {
                        let rest = p.split_off(size);
                        *prefix = Some(rest);
                        return Ok(Some(p));
                    }
                    buf.extend_from_slice(&p);
                }
                let more = read_up_to(r.as_mut(), size - buf.len()).await?;
                buf.extend_from_slice(&more);
                Ok((!buf.is_empty()).then(|| buf.freeze()))
            }
        }
    }
}

/// The CRC32 of `len` bytes of the file at `path` from `offset`. Blocking.
fn file_range_crc32(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<u32> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; FILE_PART_BUFFER];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than when the upload began",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize())
}

/// Reads until `limit` bytes or the end of the stream.
pub(crate) async fn read_up_to(
    mut r: Pin<&mut (dyn AsyncRead + Send)>,
    limit: usize,
) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(limit.min(8 * 1024 * 1024));
    while buf.len() < limit {
        let want = (limit - buf.len()).min(256 * 1024);
        let mut chunk = (&mut r).take(want as u64);
        let n = chunk.read_buf(&mut buf).await.map_err(Error::Body)?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}
