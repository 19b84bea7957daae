//! Tracing against a real OTLP receiver: a tonic server on the OpenTelemetry collector
//! protos (opentelemetry-proto), which records every span raftgated exports.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::gitops::Repo;
use crate::harness::*;
use crate::nodes::*;

/// A span as received, with the node that sent it.
#[derive(Debug, Clone)]
struct Got {
    instance: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: std::collections::HashMap<String, String>,
    error: Option<String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            Some(Value::BoolValue(b)) => b.to_string(),
            Some(Value::DoubleValue(d)) => d.to_string(),
            _ => String::new(),
        };
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let instance = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.instance.id"))
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Got {
                        instance: instance.clone(),
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        attributes: s.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                        error: s.status.filter(|st| st.code == 2).map(|st| st.message),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver::default();
        let svc = TraceServiceServer::new(r.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (r, addr)
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    async fn wait<T>(&self, what: &str, mut check: impl FnMut(&[Got]) -> Option<T>) -> T {
        let me = self.clone();
        eventually(Duration::from_secs(20), what, || {
            let spans = me.spans();
            let r = check(&spans);
            async move { r }
        })
        .await
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread")]
async fn a_proxied_request_continues_the_callers_trace() {
    let (receiver, addr) = Receiver::start().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let endpoint = format!("http://{addr}");
    // Sampling 0: only the caller's sampled traceparent makes spans.
    let gw = Gateway::start(
        &[("c.yaml", &routes_config(&up, &["r0"]))],
        &["--otlp-endpoint", &endpoint, "--trace-sampling", "0"],
    );
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let (status, _, body) = get(&gw.url("/r0"), &[("traceparent", &traceparent), ("tracestate", "vendor=abc")]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body)["headers"].clone();

    let (server, client) = receiver
        .wait("a server and a client span", |spans| {
            let server = spans.iter().find(|s| s.trace_id == TRACE && s.kind == SpanKind::Server as i32)?;
            let client = spans.iter().find(|s| s.trace_id == TRACE && s.kind == SpanKind::Client as i32)?;
            Some((server.clone(), client.clone()))
        })
        .await;
    // The server span is a child of the caller's span; the attempt's, of the server span.
    assert_eq!(server.parent, PARENT, "{server:?}");
    assert_eq!(client.parent, server.span_id, "{client:?}");
    assert_eq!(server.attributes["http.route"], "r0", "{server:?}");
    assert_eq!(server.attributes["http.response.status_code"], "200", "{server:?}");
    assert_eq!(server.attributes["raftgate.upstream"], "up", "{server:?}");
    assert_eq!(server.attributes["raftgate.retries"], "0", "{server:?}");
    assert_eq!(server.name, "GET r0");
    assert_eq!(client.attributes["raftgate.upstream"], "up", "{client:?}");
    assert_eq!(client.attributes["http.response.status_code"], "200", "{client:?}");
    assert_eq!(client.attributes["server.address"], up.addr.to_string(), "{client:?}");
    // The upstream was called as the client span, in the caller's trace, with its state.
    assert_eq!(seen["traceparent"], format!("00-{TRACE}-{}-01", client.span_id), "{seen}");
    assert_eq!(seen["tracestate"], "vendor=abc", "{seen}");

    // Unsampled (no traceparent, sampling 0): no span, and no trace context made up for
    // the upstream (it decides for itself, as without the gateway).
    let before = receiver.spans().len();
    let (_, _, body) = get(&gw.url("/r0"), &[]).await;
    assert!(json(&body)["headers"].get("traceparent").is_none(), "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.spans().len(), before, "an unsampled request made spans");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_the_callers_trace_context_passes_untouched() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &routes_config(&up, &["r0"]))], &[]);
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let (_, _, body) = get(&gw.url("/r0"), &[("traceparent", &traceparent)]).await;
    assert_eq!(json(&body)["headers"]["traceparent"], traceparent.as_str());
    let (_, _, body) = get(&gw.url("/r0"), &[]).await;
    assert!(json(&body)["headers"].get("traceparent").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_commit_is_one_trace_across_the_nodes() {
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    let c = crate::gitops::three_nodes(&repo.url(), up, &["--otlp-endpoint", &endpoint]).await;
    let leader = c.leader().await.to_string();

    repo.write_routes(&c.up, &["r0", "r1"]);
    let merge = repo.commit("add r1", None);
    let trace = &merge[..32];
    let spans = receiver
        .wait("the merge's trace with an apply span from every node", |spans| {
            let mine: Vec<Got> = spans.iter().filter(|s| s.trace_id == trace).cloned().collect();
            let applied = mine.iter().filter(|s| s.name == "apply").count();
            let root = mine.iter().any(|s| s.name.starts_with("config "));
            (root && applied == 3).then_some(mine)
        })
        .await;
    let root = spans.iter().find(|s| s.name == format!("config {}", &merge[..12])).expect("the root span");
    assert_eq!(root.instance, leader, "the leader that proposed it starts the trace");
    assert_eq!(root.parent, "", "{root:?}");
    for stage in ["git fetch", "validate and compile", "raft commit"] {
        let s = spans.iter().find(|s| s.name == stage).unwrap_or_else(|| panic!("no {stage} span: {spans:?}"));
        assert_eq!(s.parent, root.span_id, "{s:?}");
        assert_eq!(s.instance, leader);
    }
    let mut nodes: Vec<&str> = spans.iter().filter(|s| s.name == "apply").map(|s| s.instance.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["1", "2", "3"], "{spans:?}");
    for s in spans.iter().filter(|s| s.name == "apply") {
        assert_eq!(s.parent, root.span_id, "{s:?}");
        assert_eq!(s.attributes["raftgate.routes"], "2", "{s:?}");
        assert!(s.error.is_none(), "{s:?}");
    }

    // A refused commit: its trace says where it stopped and why.
    let mut broken = routes_config(&c.up, &["r0", "r1"]);
    broken += "---\nkind: Route\nname: bad\nrules:\n  - backendRefs: [{ upstream: nope }]\n";
    repo.write("c.yaml", &broken);
    let bad = repo.commit("break it", None);
    let spans = receiver
        .wait("the refused commit's trace", |spans| {
            let mine: Vec<Got> = spans.iter().filter(|s| s.trace_id == bad[..32]).cloned().collect();
            mine.iter().any(|s| s.name.starts_with("config ")).then_some(mine)
        })
        .await;
    let validate = spans.iter().find(|s| s.name == "validate and compile").expect("a validate span");
    let why = validate.error.clone().expect("the validate span failed");
    assert!(why.contains("c.yaml:") && why.contains("nope"), "{why}");
    assert!(spans.iter().all(|s| s.name != "raft commit" && s.name != "apply"), "{spans:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_callers_decision_are_sampled_at_the_configured_ratio() {
    let (receiver, addr) = Receiver::start().await;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let endpoint = format!("http://{addr}");
    let gw = Gateway::start(
        &[("c.yaml", &routes_config(&up, &["r0"]))],
        &["--otlp-endpoint", &endpoint, "--trace-sampling", "1"],
    );
    // No traceparent, and a malformed one (treated as absent, not passed on): each starts
    // a sampled trace here.
    for headers in [vec![], vec![("traceparent", "00-not-a-trace-01")]] {
        let (_, _, body) = get(&gw.url("/r0"), &headers).await;
        let tp = json(&body)["headers"]["traceparent"].as_str().unwrap().to_string();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!((parts.len(), parts[3]), (4, "01"), "{tp}");
        let trace = parts[1].to_string();
        let server = receiver
            .wait("the root server span", |spans| {
                spans.iter().find(|s| s.trace_id == trace && s.kind == SpanKind::Server as i32).cloned()
            })
            .await;
        assert_eq!(server.parent, "", "a root span: {server:?}");
    }
    // An unsampled caller's decision is kept: no span, and its traceparent goes on as sent.
    let before = receiver.spans().len();
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    let (_, _, body) = get(&gw.url("/r0"), &[("traceparent", &unsampled)]).await;
    assert_eq!(json(&body)["headers"]["traceparent"], unsampled.as_str());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.spans().len(), before);
}
