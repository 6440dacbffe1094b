//! Content codings on the wire, for phones on metered data: answers are
//! compressed (gzip or brotli, whichever the client's `Accept-Encoding`
//! prefers), and request bodies may come gzip-encoded
//! (`Content-Encoding: gzip`), e.g. a push (docs/protocol.md,
//! "Compression").
//!
//! **Invariant: the body limit counts decompressed bytes.** A gzip body is
//! decoded as it is read, and the body limit (`--max-body-bytes`) is
//! applied by the extractor to what comes out, so a small "gzip bomb" is
//! `413 body_too_large` after at most the limit's worth of output, never a
//! buffer of its full size. A gzip body whose `Content-Length` alone is
//! over the limit is refused before a byte is read.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::decompression::RequestDecompressionLayer;

use crate::error::ApiError;
use crate::AppState;

/// The request codings the server reads, as an `Accept-Encoding` value
/// (sent with `415 unsupported_encoding`, RFC 7694).
pub const REQUEST_ENCODINGS: &str = "gzip";

/// Answers smaller than this many bytes go out as they are: gzip's own
/// header and trailer are 18 bytes, and a short error body barely shrinks.
pub const COMPRESS_BYTES_MIN: u16 = 256;

/// Compression level of answers, the same for gzip and brotli. brotli's
/// default (11) is meant for files compressed once; at 4 it is about as
/// fast as gzip's default and still smaller (docs/performance.md,
/// "Compression").
pub const COMPRESSION_QUALITY: i32 = 4;

/// What is compressed: answers of at least [`COMPRESS_BYTES_MIN`] bytes,
/// except images other than SVG (already compressed), XLSX exports (a
/// zip already) and backups (large, and compressing them would take the
/// CPU that serving needs while a backup streams; an operator may gzip
/// the file).
pub fn compression() -> CompressionLayer<impl Predicate> {
    let predicate = SizeAbove::new(COMPRESS_BYTES_MIN)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
        .and(NotForContentType::const_new(
            "application/vnd.openxmlformats",
        ))
        .and(NotForContentType::const_new("application/octet-stream"));
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .quality(CompressionLevel::Precise(COMPRESSION_QUALITY))
        .compress_when(predicate)
}

/// Decodes gzip request bodies as they are read. Runs inside
/// [`check_request_encoding`], which has refused every other coding, so
/// it passes the rest (none, or `identity`) through.
pub fn decompression() -> RequestDecompressionLayer {
    RequestDecompressionLayer::new()
        .gzip(true)
        .pass_through_unaccepted(true)
}

/// Refuses a request body in a coding the server does not read (`415
/// unsupported_encoding`, never a body misread as JSON) and a gzip body
/// whose `Content-Length` is over the body limit; spells `gzip` the way
/// [`decompression`] matches it.
pub async fn check_request_encoding(
    State(s): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(coding) = req.headers().get(header::CONTENT_ENCODING) else {
        return next.run(req).await;
    };
    let coding = coding.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match coding.as_str() {
        "identity" => {}
        "gzip" | "x-gzip" => {
            let length = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if length.is_some_and(|n| n > s.config.max_body_bytes as u64) {
                return ApiError::BodyTooLarge.into_response();
            }
            req.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        _ => {
            return ApiError::UnsupportedEncoding(format!(
                "the request body's Content-Encoding {coding:?} is not one this server reads; send it as it is, or gzip-encoded (Content-Encoding: gzip)"
            ))
            .into_response()
        }
    }
    next.run(req).await
}
