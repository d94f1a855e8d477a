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
    let out = client
        .call("UploadPart", &key, || {
            let (body, key, upload_id) = (&body, &key, &upload_id);
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
                    .body(stream)
                    // The part's integrity is its CRC32, which the server checks; the SHA-256
                    // of a signed payload (which the SDK computes only over plain HTTP) would
                    // hash every byte once more on each side, for no extra guarantee.
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
