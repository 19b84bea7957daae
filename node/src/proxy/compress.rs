//! Response compression, part of phase `response_filter`: the coding is negotiated from
//! the client's `Accept-Encoding` (q-values, then the rule's order), and the upstream's
//! answer is compressed as it streams: output leaves whenever 32 KiB have built up or the
//! upstream pauses (the encoder is flushed then), so a slow or endless stream reaches the
//! client as it comes, not when it ends.
//!
//! Left alone: HEAD requests, 1xx/204/206/304 answers, answers that already have a
//! `Content-Encoding` or a `Content-Range`, carry `Cache-Control: no-transform`, have a
//! media type the rule does not list, or declare fewer than `minBytes`. An answer that
//! qualifies gets `Vary: Accept-Encoding` whether or not this client accepted a coding, so
//! caches on the way keep the variants apart.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use schemas::snapshot::{CompressionSpec, ContentCoding};

use super::body::{BoxError, RespBody};

/// Output is handed on once this much has built up, even while the upstream keeps sending.
const OUTPUT_CHUNK: usize = 32 * 1024;

/// A rule's compression policy, ready for the request path.
#[derive(Debug)]
pub struct Compressor {
    /// Most preferred first.
    encodings: Vec<ContentCoding>,
    min_bytes: u64,
    /// `type/subtype`, lower case.
    exact: Vec<String>,
    /// `type` of each `type/*`.
    whole: Vec<String>,
    /// `*/*` was listed.
    any: bool,
}

impl Compressor {
    pub fn compile(spec: &CompressionSpec) -> Self {
        let mut c = Compressor {
            encodings: spec.encodings.clone(),
            min_bytes: spec.min_bytes,
            exact: Vec::new(),
            whole: Vec::new(),
            any: false,
        };
        for t in &spec.content_types {
            match t.split_once('/') {
                Some(("*", "*")) => c.any = true,
                Some((ty, "*")) => c.whole.push(ty.to_string()),
                _ => c.exact.push(t.clone()),
            }
        }
        c
    }

    /// Compresses `body` when the answer qualifies and the client accepts one of the
    /// rule's codings; adjusts the headers to match.
    pub fn apply(
        &self,
        route: &Arc<str>,
        accept: Option<&HeaderValue>,
        head: bool,
        parts: &mut http::response::Parts,
        body: Incoming,
    ) -> RespBody {
        if head || !self.qualifies(parts.status, &parts.headers) {
            return RespBody::Upstream(body);
        }
        add_vary(&mut parts.headers);
        let Some(coding) = accept.and_then(|a| negotiate(a.as_bytes(), &self.encodings)) else {
            return RespBody::Upstream(body);
        };
        let h = &mut parts.headers;
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::ACCEPT_RANGES);
        // The bytes differ from the upstream's representation, so a strong validator would
        // claim a byte-for-byte equality that no longer holds (what nginx does too).
        if let Some(weak) = h.get(header::ETAG).and_then(weaken) {
            h.insert(header::ETAG, weak);
        }
        RespBody::Transformed(UnsyncBoxBody::new(Compress::new(coding, body, route.clone())))
    }

    /// The coding this client would get (`""`: none), for the cache key.
    pub fn coding_for(&self, accept: Option<&HeaderValue>) -> &'static str {
        accept.and_then(|a| negotiate(a.as_bytes(), &self.encodings)).map_or("", |c| c.token())
    }

    fn qualifies(&self, status: StatusCode, h: &HeaderMap) -> bool {
        if status.is_informational()
            || matches!(status, StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED)
        {
            return false;
        }
        if h.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
            || h.contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        let len = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if len.is_some_and(|n| n < self.min_bytes) {
            return false;
        }
        let no_transform = h
            .get_all(header::CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-transform"))));
        !no_transform && h.get(header::CONTENT_TYPE).is_some_and(|t| self.type_listed(t.as_bytes()))
    }

    fn type_listed(&self, content_type: &[u8]) -> bool {
        if self.any {
            return true;
        }
        let Ok(t) = std::str::from_utf8(content_type) else { return false };
        let media = t.split(';').next().unwrap_or("").trim();
        let Some((ty, _)) = media.split_once('/') else { return false };
        self.exact.iter().any(|e| e.eq_ignore_ascii_case(media))
            || self.whole.iter().any(|w| w.eq_ignore_ascii_case(ty))
    }
}

/// The coding to use: the highest q-value the client gives one of `offered` (explicitly or
/// through `*`), ties going to the earlier in `offered`; `None` when it accepts none of them
/// (the answer then goes unencoded, which RFC 9110 §12.5.3 always allows).
pub fn negotiate(accept: &[u8], offered: &[ContentCoding]) -> Option<ContentCoding> {
    let accept = std::str::from_utf8(accept).ok()?;
    let mut explicit: [Option<u16>; 3] = [None; 3];
    let mut star = None;
    for item in accept.split(',') {
        let mut params = item.split(';');
        let coding = params.next().unwrap_or("").trim();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1000), |(_, v)| qvalue(v.trim()));
        let Some(q) = q else { continue };
        if coding == "*" {
            star = Some(q);
            continue;
        }
        let slot = match coding.to_ascii_lowercase().as_str() {
            "zstd" => 0,
            "br" => 1,
            "gzip" | "x-gzip" => 2,
            _ => continue,
        };
        explicit[slot] = Some(explicit[slot].map_or(q, |old: u16| old.max(q)));
    }
    let mut best: Option<(u16, ContentCoding)> = None;
    for &c in offered {
        let slot = match c {
            ContentCoding::Zstd => 0,
            ContentCoding::Brotli => 1,
            ContentCoding::Gzip => 2,
        };
        let q = explicit[slot].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, c));
        }
    }
    best.map(|(_, c)| c)
}

/// A q-value (RFC 9110 §12.4.2) in thousandths; `None` when malformed.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u16, |a, b| a * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn add_vary(h: &mut HeaderMap) {
    let present = h.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding")))
    });
    if !present {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// `"x"` → `W/"x"`; a weak validator stays as it is (`None`).
fn weaken(etag: &HeaderValue) -> Option<HeaderValue> {
    let b = etag.as_bytes();
    if b.starts_with(b"W/") {
        return None;
    }
    HeaderValue::from_bytes(&[b"W/", b].concat()).ok()
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    // Levels for compressing on the fly, where CPU per request matters more than the last
    // percent of ratio; windows kept small because every compressed stream holds its own.
    fn new(coding: ContentCoding) -> std::io::Result<Self> {
        Ok(match coding {
            ContentCoding::Gzip => {
                Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5)))
            }
            // Quality 4, a 256 KiB window (lgwin 18).
            ContentCoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, 4, 18))),
            ContentCoding::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
                e.window_log(19)?;
                Encoder::Zstd(e)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// An upstream body, compressed as it streams.
pub struct Compress {
    inner: Incoming,
    /// `None` once the stream is finished (or failed).
    enc: Option<Encoder>,
    /// The upstream's trailers, passed on after the last data.
    trailers: Option<HeaderMap>,
    /// Data went in since the last flush.
    dirty: bool,
    coding: ContentCoding,
    route: Arc<str>,
    bytes_in: u64,
    bytes_out: u64,
}

impl std::fmt::Debug for Compress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compress").field("coding", &self.coding).field("bytes_in", &self.bytes_in).finish()
    }
}

impl Compress {
    fn new(coding: ContentCoding, inner: Incoming, route: Arc<str>) -> Self {
        // Making an encoder allocates and cannot fail but for memory; then the answer
        // fails as it would on any other allocation failure.
        let enc = Encoder::new(coding).ok();
        Compress { inner, enc, trailers: None, dirty: false, coding, route, bytes_in: 0, bytes_out: 0 }
    }

    fn emit(&mut self, out: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.bytes_out += out.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.enc = None;
        self.trailers = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for Compress {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(enc) = this.enc.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.bytes_in += data.len() as u64;
                        if let Err(e) = enc.write(&data) {
                            return this.fail(e);
                        }
                        this.dirty = true;
                        if enc.output().len() >= OUTPUT_CHUNK {
                            let out = std::mem::take(enc.output());
                            return this.emit(out);
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return this.fail(e),
                Poll::Ready(None) => {
                    let enc = this.enc.take().expect("checked above");
                    match enc.finish() {
                        Ok(out) if !out.is_empty() => return this.emit(out),
                        Ok(_) => {}
                        Err(e) => return this.fail(e),
                    }
                }
                Poll::Pending => {
                    // The upstream has nothing more for now: what was compressed so far
                    // goes to the client rather than waiting for the next chunk.
                    if this.dirty {
                        this.dirty = false;
                        if let Err(e) = enc.flush() {
                            return this.fail(e);
                        }
                        let out = std::mem::take(enc.output());
                        if !out.is_empty() {
                            return this.emit(out);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.enc.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Compress {
    fn drop(&mut self) {
        let (route, coding) = (self.route.to_string(), self.coding.token());
        metrics::counter!("raftgate_compressed_responses_total", "route" => route.clone(), "encoding" => coding)
            .increment(1);
        metrics::counter!("raftgate_compression_bytes_total", "route" => route.clone(), "encoding" => coding, "stage" => "in")
            .increment(self.bytes_in);
        metrics::counter!("raftgate_compression_bytes_total", "route" => route, "encoding" => coding, "stage" => "out")
            .increment(self.bytes_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContentCoding::{Brotli, Gzip, Zstd};

    #[test]
    fn negotiation_follows_q_values_then_the_rules_order() {
        let all = [Zstd, Brotli, Gzip];
        let cases: [(&str, &[ContentCoding], Option<ContentCoding>); 14] = [
            ("gzip, deflate, br, zstd", &all, Some(Zstd)),
            ("gzip, deflate, br", &all, Some(Brotli)),
            ("gzip", &all, Some(Gzip)),
            ("x-gzip", &all, Some(Gzip)),
            ("br;q=0.5, gzip;q=0.8", &all, Some(Gzip)),
            ("br;q=1.0, gzip;q=0.999, zstd;q=0", &all, Some(Brotli)),
            ("*", &all, Some(Zstd)),
            ("*;q=0.1, gzip;q=0.5", &all, Some(Gzip)),
            ("*;q=0, gzip", &all, Some(Gzip)),
            ("identity", &all, None),
            ("gzip;q=0", &all, None),
            ("br;q=2, gzip;q=0.x", &all, None),
            ("GZIP ; Q=0.3", &[Brotli, Gzip], Some(Gzip)),
            ("zstd, br", &[Gzip], None),
        ];
        for (accept, offered, want) in cases {
            assert_eq!(negotiate(accept.as_bytes(), offered), want, "{accept} offering {offered:?}");
        }
        assert_eq!(negotiate(b"gzip, br", &[Gzip, Brotli]), Some(Gzip), "ties go to the rule's first");
    }

    #[test]
    fn only_listed_types_of_sufficient_size_qualify() {
        let spec = CompressionSpec {
            encodings: vec![Gzip],
            min_bytes: 100,
            content_types: vec!["application/json".into(), "text/*".into()],
        };
        let c = Compressor::compile(&spec);
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        let ok = StatusCode::OK;
        assert!(c.qualifies(ok, &h(&[("content-type", "text/html; charset=utf-8")])));
        assert!(c.qualifies(ok, &h(&[("content-type", "Application/JSON"), ("content-length", "100")])));
        assert!(!c.qualifies(ok, &h(&[("content-type", "application/json"), ("content-length", "99")])));
        assert!(!c.qualifies(ok, &h(&[("content-type", "image/png")])));
        assert!(!c.qualifies(ok, &h(&[])), "no type, no compression");
        assert!(!c.qualifies(ok, &h(&[("content-type", "text/plain"), ("content-encoding", "gzip")])));
        assert!(c.qualifies(ok, &h(&[("content-type", "text/plain"), ("content-encoding", "identity")])));
        assert!(!c.qualifies(ok, &h(&[("content-type", "text/plain"), ("cache-control", "public, No-Transform")])));
        assert!(!c.qualifies(ok, &h(&[("content-type", "text/plain"), ("content-range", "bytes 0-1/2")])));
        for s in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED, StatusCode::PARTIAL_CONTENT] {
            assert!(!c.qualifies(s, &h(&[("content-type", "text/plain")])), "{s}");
        }
        assert!(c.qualifies(StatusCode::NOT_FOUND, &h(&[("content-type", "text/plain")])));
    }

    #[test]
    fn validators_and_vary() {
        assert_eq!(weaken(&HeaderValue::from_static("\"v1\"")).unwrap(), "W/\"v1\"");
        assert_eq!(weaken(&HeaderValue::from_static("W/\"v1\"")), None);
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        add_vary(&mut h);
        add_vary(&mut h);
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Origin", "accept-encoding"]);
    }
}
