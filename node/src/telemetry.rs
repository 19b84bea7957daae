//! Distributed tracing: OpenTelemetry spans for proxied requests and for the config path,
//! exported over OTLP/gRPC to `--otlp-endpoint`. Off (no endpoint), nothing here runs and
//! the request path does no tracing work at all: a `traceparent` from the client is
//! forwarded untouched, like any other header.
//!
//! `proxy::trace` samples (a caller's decision in `traceparent` is followed, other traces
//! are sampled at `--trace-sampling`); the SDK (opentelemetry_sdk) makes the sampled
//! spans and batches them on its own thread. That thread has no Tokio reactor, which tonic needs, so the exporter
//! handed to it only queues each batch; a task on the node's runtime converts batches to
//! OTLP (opentelemetry-proto) and sends them. A full queue or an unreachable collector
//! drops spans, counted in `raftgate_trace_spans_dropped_total`; nothing waits for the
//! collector.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider,
    SpanData,
};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;

/// Batches waiting for the export task; more are dropped.
const QUEUE: usize = 64;
/// How often the SDK hands over a batch (and the most a span waits before export).
const EXPORT_EVERY: Duration = Duration::from_millis(500);
/// An export call that takes longer is abandoned (its spans dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Settings {
    /// `http://host:port` of an OTLP/gRPC receiver (a collector or an agent).
    pub endpoint: String,
    /// The share of traces started here that are sampled, 0 to 1.
    pub sampling: f64,
    /// `service.instance.id`: the node id, or `local`.
    pub instance: String,
}

/// The node's tracer and how trace context travels in headers.
#[derive(Debug)]
pub struct Telemetry {
    /// Requests: sampled by `proxy::trace` before a span is made (`sampling`); the SDK
    /// records every span it is asked for.
    pub tracer: SdkTracer,
    /// The share of requests without a caller's decision that are traced.
    pub sampling: f64,
    provider: SdkTracerProvider,
    /// Config commits: always sampled, ids from the commit (`CommitIds`).
    config_tracer: SdkTracer,
    config_provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    /// Starts the exporter task and the SDK. Must run inside the node's Tokio runtime.
    pub fn start(settings: &Settings) -> anyhow::Result<Arc<Telemetry>> {
        let endpoint = tonic::transport::Endpoint::from_shared(settings.endpoint.clone())
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint `{}` is not a URL: {e}", settings.endpoint))?;
        if endpoint.uri().scheme_str() != Some("http") {
            anyhow::bail!(
                "--otlp-endpoint `{}`: only http:// (OTLP/gRPC in plaintext, to a collector or agent on this host or network) is supported",
                settings.endpoint
            );
        }
        if !(0.0..=1.0).contains(&settings.sampling) {
            anyhow::bail!("--trace-sampling {} is not between 0 and 1", settings.sampling);
        }
        let channel = endpoint.connect_timeout(Duration::from_secs(3)).timeout(EXPORT_TIMEOUT).connect_lazy();
        let resource = Resource::builder()
            .with_service_name("raftgate")
            .with_attributes([
                KeyValue::new("service.instance.id", settings.instance.clone()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export_loop(rx, TraceServiceClient::new(channel), ResourceAttributesWithSchema::from(&resource)));
        let provider = |sampler: Sampler| {
            let batches = BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build();
            let processor =
                BatchSpanProcessor::builder(QueueExporter { tx: tx.clone() }).with_batch_config(batches).build();
            SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_sampler(sampler)
                .with_resource(resource.clone())
        };
        // The request path samples (it knows cheaply when not to make a span at all).
        let requests = provider(Sampler::AlwaysOn).build();
        let config = provider(Sampler::AlwaysOn).with_id_generator(CommitIds).build();
        Ok(Arc::new(Telemetry {
            tracer: requests.tracer("raftgate"),
            sampling: settings.sampling,
            provider: requests,
            config_tracer: config.tracer("raftgate.config"),
            config_provider: config,
            propagator: TraceContextPropagator::new(),
        }))
    }

    /// The trace context of incoming headers (`traceparent`, `tracestate`), or an empty one.
    pub fn extract(&self, headers: &http::HeaderMap) -> opentelemetry::Context {
        self.propagator.extract(&Headers(headers))
    }

    /// Writes `cx`'s span as `traceparent` (and `tracestate`) into `headers`.
    pub fn inject(&self, cx: &opentelemetry::Context, headers: &mut http::HeaderMap) {
        self.propagator.inject_context(cx, &mut HeadersMut(headers));
    }

    /// Exports what is pending (at shutdown).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
        let _ = self.config_provider.force_flush();
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Hands batches from the SDK's thread to the export task without waiting.
#[derive(Debug)]
struct QueueExporter {
    tx: mpsc::Sender<Vec<SpanData>>,
}

impl opentelemetry_sdk::trace::SpanExporter for QueueExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        if self.tx.try_send(batch).is_err() {
            metrics::counter!("raftgate_trace_spans_dropped_total").increment(n);
        }
        Ok(())
    }
}

async fn export_loop(
    mut rx: mpsc::Receiver<Vec<SpanData>>,
    mut client: TraceServiceClient<tonic::transport::Channel>,
    resource: ResourceAttributesWithSchema,
) {
    let exported = metrics::counter!("raftgate_trace_spans_exported_total");
    let dropped = metrics::counter!("raftgate_trace_spans_dropped_total");
    let mut warned: Option<std::time::Instant> = None;
    while let Some(batch) = rx.recv().await {
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, &resource) };
        match client.export(request).await {
            Ok(_) => exported.increment(n),
            Err(e) => {
                dropped.increment(n);
                // Once a minute at most: a collector that is down must not flood the log.
                if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e.message(), spans = n, "cannot export spans to the OTLP endpoint; dropping them");
                    warned = Some(std::time::Instant::now());
                }
            }
        }
    }
}

/// One stage of a config commit's way to the fleet, as a span.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Why the stage failed (a refusal's errors), if it did.
    pub error: Option<String>,
    pub attributes: Vec<KeyValue>,
}

/// The ids of config commit `commit`'s trace: the trace id is the commit's first 16 bytes
/// and the root span's id is derived from it, so every node puts its spans in the same
/// trace without any id travelling through the Raft log. `None` for a config that did
/// not come from Git.
pub fn config_ids(commit: &str) -> Option<(TraceId, SpanId)> {
    use sha2::{Digest, Sha256};
    let bytes = hex::decode(commit).ok().filter(|b| b.len() >= 20)?;
    let trace: [u8; 16] = bytes[..16].try_into().ok()?;
    let root: [u8; 8] =
        Sha256::new().chain_update(b"raftgate config root ").chain_update(&bytes).finalize()[..8].try_into().ok()?;
    Some((TraceId::from_bytes(trace), SpanId::from_bytes(root)))
}

impl Telemetry {
    /// The leader's spans of a commit: the root (`config <sha>`, from the first stage's
    /// start to the last one's end) and one child per stage. Always sampled: commits are
    /// few and each is worth explaining.
    pub fn config_leader(&self, commit: &str, stages: &[Stage]) {
        let Some((trace_id, root_id)) = config_ids(commit) else { return };
        let (Some(first), Some(last)) = (stages.first(), stages.last()) else { return };
        let builder = SpanBuilder::from_name(format!("config {}", &commit[..commit.len().min(12)]))
            .with_kind(SpanKind::Internal)
            .with_start_time(first.start)
            .with_attributes([KeyValue::new("vcs.ref.head.revision", commit.to_string())]);
        NEXT_IDS.with(|n| n.set((Some(trace_id), Some(root_id))));
        let mut root = self.config_tracer.build(builder);
        NEXT_IDS.with(|n| n.set((None, None)));
        if let Some(e) = stages.iter().find_map(|s| s.error.clone()) {
            root.set_status(Status::error(e));
        }
        let parent = remote_parent(trace_id, root_id);
        for s in stages {
            self.stage(&parent, s);
        }
        root.end_with_timestamp(last.end);
    }

    /// This node's span of a commit: applying it (compile and swap), under the leader's
    /// root span of the same commit.
    pub fn config_apply(&self, commit: &str, stage: &Stage) {
        let Some((trace_id, root_id)) = config_ids(commit) else { return };
        self.stage(&remote_parent(trace_id, root_id), stage);
    }

    fn stage(&self, parent: &opentelemetry::Context, s: &Stage) {
        let builder = SpanBuilder::from_name(s.name).with_start_time(s.start).with_attributes(s.attributes.clone());
        let mut span = self.config_tracer.build_with_context(builder, parent);
        if let Some(e) = &s.error {
            span.set_status(Status::error(e.clone()));
        }
        span.end_with_timestamp(s.end);
    }
}

thread_local! {
    /// The ids the next root span built on this thread takes (`CommitIds`).
    static NEXT_IDS: std::cell::Cell<(Option<TraceId>, Option<SpanId>)> = const { std::cell::Cell::new((None, None)) };
}

/// Ids for config spans: a commit's root span takes the ids derived from the commit
/// (set just before it is built, on the same thread); everything else gets random ones.
#[derive(Debug)]
struct CommitIds;

impl IdGenerator for CommitIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS.with(|n| n.get().0).unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS.with(|n| n.get().1).unwrap_or_else(|| RandomIdGenerator::default().new_span_id())
    }
}

fn remote_parent(trace_id: TraceId, span_id: SpanId) -> opentelemetry::Context {
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, Default::default());
    opentelemetry::Context::new().with_remote_span_context(sc)
}
