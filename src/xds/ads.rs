//! The ADS stream (state of the world): one request per subscribed type, then for
//! every response an ACK (its version and nonce) or a NACK (the last accepted
//! version, its nonce and an `error_detail` with attache's message). A broken stream
//! is re-opened after a jittered, doubling backoff; on a new stream each type asks
//! again with the last version it accepted, and until the server answers, what was
//! accepted before keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{node::UserAgentVersionType, Locality, Node};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost_otlp::Message;

use super::ResourceType;
use super::{dynamic, eds, short_name, transport, type_of, type_url, Client};
use crate::config::from_xds::Nack;
use crate::server::Server;

/// gRPC `INVALID_ARGUMENT`, the code of a NACK's `error_detail` (as Envoy sends).
const INVALID_ARGUMENT: i32 = 3;
/// Bound on opening the stream once connected.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Keep one ADS stream open for the life of the process.
pub(super) async fn run(client: Arc<Client>, server: Arc<Server>) {
    let base = client.settings.backoff;
    let mut backoff = base;
    loop {
        let mut answered = false;
        let err = session(&client, &server, &mut answered).await;
        client.set_connected(false);
        if answered {
            backoff = base;
        }
        let delay = jitter(backoff);
        tracing::warn!(cluster = %client.settings.cluster, error = %err, retry_in = ?delay, "xds stream down; serving the last accepted resources");
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(client.settings.max_backoff);
    }
}

/// Between half and all of `d` (Envoy-style jitter: reconnects spread out).
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

/// One stream, until it fails; `answered` is set once a response arrived.
async fn session(client: &Arc<Client>, server: &Arc<Server>, answered: &mut bool) -> String {
    let Some(cluster) = server
        .snapshot
        .load()
        .clusters
        .get(&client.settings.cluster)
        .cloned()
    else {
        return format!("cluster `{}` is not configured", client.settings.cluster);
    };
    let (svc, origin, hold) = match transport::connect(&cluster).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let err = if client.settings.delta {
        super::delta::stream(client, server, svc, origin, answered).await
    } else {
        stream(client, server, svc, origin, answered).await
    };
    hold.end(*answered);
    err
}

/// Run the ADS stream over a connected service until it fails.
async fn stream(
    client: &Arc<Client>,
    server: &Arc<Server>,
    svc: transport::H2,
    origin: http::Uri,
    answered: &mut bool,
) -> String {
    let mut grpc = AggregatedDiscoveryServiceClient::with_origin(svc, origin);
    let (tx, outbound) = outbound::<DiscoveryRequest>();
    let subs = Arc::new(Mutex::new(Subscriptions::new(client)));
    subscribe_all(client, &subs, &tx).await;
    // CDS, LDS and RDS compile a whole config: off this loop, in order.
    let (work, _worker) = serial();
    let mut inbound = match open(client, grpc.stream_aggregated_resources(outbound)).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let registry = eds::registry();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(resp)) => {
                    *answered = true;
                    let received = lock(&subs).receive(client, resp);
                    match received {
                        Received::Answer(r) => { let _ = tx.send(*r); }
                        Received::Dynamic(t, resp) => {
                            let _ = work.send(Box::pin(dynamic_job(client.clone(), server.clone(), subs.clone(), tx.clone(), t, resp)));
                        }
                        Received::Eds(mut resp) => {
                            let result = apply_eds(std::mem::take(&mut resp.resources), None).await;
                            let answer = lock(&subs).finish(client, ResourceType::Eds, resp, result);
                            let _ = tx.send(answer);
                        }
                    }
                }
                Ok(None) => return "stream closed by the server".to_string(),
                Err(status) => return format!("stream failed: {status}"),
            },
            _ = registry.wanted_changed.notified() => {
                follow(client, &subs, &tx, ResourceType::Eds, registry.wanted());
            }
        }
    }
}

/// The requests a stream sends (the sender) and the stream tonic sends them from.
pub(super) fn outbound<M: Send + 'static>() -> (
    tokio::sync::mpsc::UnboundedSender<M>,
    impl futures_util::Stream<Item = M> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<M>();
    let out =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (tx, out)
}

/// What a stream subscribed to, in one protocol's terms: the first request of each
/// type on a stream, and the request that follows a change of the names wanted.
pub(super) trait Subscribe {
    type Request;

    fn initial(
        &mut self,
        client: &Client,
        t: ResourceType,
        names: BTreeSet<String>,
    ) -> Option<Self::Request>;

    fn names_changed(
        &mut self,
        client: &Client,
        t: ResourceType,
        now: BTreeSet<String>,
    ) -> Option<Self::Request>;
}

/// Subscribe to every type on a new stream.
pub(super) async fn subscribe_all<S: Subscribe>(
    client: &Client,
    subs: &Mutex<S>,
    tx: &tokio::sync::mpsc::UnboundedSender<S::Request>,
) {
    for (t, names) in wanted(client).await {
        let first = lock(subs).initial(client, t, names);
        if let Some(r) = first {
            let _ = tx.send(r);
        }
    }
}

/// Follow the names `t` wants now (a request only when they changed).
pub(super) fn follow<S: Subscribe>(
    client: &Client,
    subs: &Mutex<S>,
    tx: &tokio::sync::mpsc::UnboundedSender<S::Request>,
    t: ResourceType,
    now: BTreeSet<String>,
) {
    let r = lock(subs).names_changed(client, t, now);
    if let Some(r) = r {
        let _ = tx.send(r);
    }
}

/// The names each subscribed type asks for on a new stream: EDS the services of
/// the running `discovery.eds` clusters, RDS the route configurations of the
/// accepted listeners, CDS and LDS none (a wildcard).
async fn wanted(client: &Client) -> Vec<(ResourceType, BTreeSet<String>)> {
    let rds_names = client.dynamic.lock().await.rds_names();
    let types = client.settings.types.iter().copied();
    types
        .map(|t| match t {
            ResourceType::Eds => (t, eds::registry().wanted()),
            ResourceType::Rds => (t, rds_names.clone()),
            ResourceType::Cds | ResourceType::Lds => (t, BTreeSet::new()),
        })
        .collect()
}

/// Open the stream (bounded by [`OPEN_TIMEOUT`]); the client is connected then.
pub(super) async fn open<R>(
    client: &Client,
    opening: impl std::future::Future<
        Output = Result<tonic_xds::Response<tonic_xds::Streaming<R>>, tonic_xds::Status>,
    >,
) -> Result<tonic_xds::Streaming<R>, String> {
    let inbound = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return Err(format!("stream refused: {status}")),
        Err(_) => return Err("stream not opened within 15s".to_string()),
    };
    client.set_connected(true);
    let protocol = if client.settings.delta {
        "delta"
    } else {
        "state of the world"
    };
    tracing::info!(cluster = %client.settings.cluster, protocol, "xds stream up");
    Ok(inbound)
}

/// What this stream asked for and the last nonce of each type.
struct Subscriptions {
    node: Option<Node>,
    names: BTreeMap<ResourceType, BTreeSet<String>>,
    nonces: BTreeMap<ResourceType, String>,
}

impl Subscriptions {
    fn new(client: &Client) -> Subscriptions {
        Subscriptions {
            node: Some(node(client)),
            names: BTreeMap::new(),
            nonces: BTreeMap::new(),
        }
    }

    fn request(
        &mut self,
        client: &Client,
        t: ResourceType,
        nack: Option<Status>,
    ) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: client.version(t),
            node: self.node.take(),
            resource_names: self
                .names
                .get(&t)
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            type_url: type_url(t).to_string(),
            response_nonce: self.nonces.get(&t).cloned().unwrap_or_default(),
            error_detail: nack,
            ..Default::default()
        }
    }

    /// Take a response: EDS is checked and applied by the stream (off the serving
    /// threads, before the next response is read); CDS, LDS and RDS go to the worker.
    fn receive(&mut self, client: &Client, resp: DiscoveryResponse) -> Received {
        let Some(t) = type_of(&resp.type_url).filter(|t| client.settings.types.contains(t)) else {
            tracing::warn!(type_url = %resp.type_url, "xds response of a type attache did not ask for; rejected");
            return Received::Answer(Box::new(DiscoveryRequest {
                node: self.node.take(),
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce,
                error_detail: Some(status(format!(
                    "attache did not subscribe to {}",
                    resp.type_url
                ))),
                ..Default::default()
            }));
        };
        self.nonces.insert(t, resp.nonce.clone());
        if t == ResourceType::Eds {
            Received::Eds(resp)
        } else {
            Received::Dynamic(t, resp)
        }
    }

    /// Record the outcome of a response; the ACK or NACK to send.
    fn finish(
        &mut self,
        client: &Client,
        t: ResourceType,
        resp: DiscoveryResponse,
        result: Result<Vec<String>, Nack>,
    ) -> DiscoveryRequest {
        match result {
            Ok(names) => {
                tracing::info!(r#type = short_name(t), version = %resp.version_info, resources = names.len(), "xds update accepted");
                client.accepted(t, &resp.version_info, names);
                let mut ack = self.request(client, t, None);
                ack.version_info = resp.version_info;
                ack
            }
            Err(nack) => {
                let message = nack.to_string();
                tracing::warn!(r#type = short_name(t), version = %resp.version_info, error = %message, "xds update rejected; keeping the last accepted state");
                client.rejected(t, &message);
                self.request(client, t, Some(status(message)))
            }
        }
    }
}

impl Subscribe for Subscriptions {
    type Request = DiscoveryRequest;

    /// The first request of `t` on this stream (EDS and RDS: once something wants
    /// a name; CDS and LDS: wildcard).
    fn initial(
        &mut self,
        client: &Client,
        t: ResourceType,
        names: BTreeSet<String>,
    ) -> Option<DiscoveryRequest> {
        if matches!(t, ResourceType::Eds | ResourceType::Rds) && names.is_empty() {
            return None;
        }
        self.names.insert(t, names);
        Some(self.request(client, t, None))
    }

    /// A new request when the names wanted of `t` changed.
    fn names_changed(
        &mut self,
        client: &Client,
        t: ResourceType,
        now: BTreeSet<String>,
    ) -> Option<DiscoveryRequest> {
        if !client.settings.types.contains(&t) || self.names.get(&t) == Some(&now) {
            return None;
        }
        self.names.insert(t, now);
        Some(self.request(client, t, None))
    }
}

enum Received {
    Answer(Box<DiscoveryRequest>),
    Eds(DiscoveryResponse),
    Dynamic(ResourceType, DiscoveryResponse),
}

pub(super) fn lock<T>(subs: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    subs.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A piece of work for the stream's serial worker.
pub(super) type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A worker that runs jobs one at a time, in the order sent, for as long as the
/// returned guard lives: CDS, LDS and RDS updates compile a whole config, which may
/// wait for EDS clusters' first endpoints, so they run beside the stream loop (which
/// keeps reading) and never overtake each other.
pub(super) fn serial() -> (tokio::sync::mpsc::UnboundedSender<Job>, AbortOnDrop) {
    let (work, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let worker = tokio::spawn(async move {
        while let Some(job) = queue.recv().await {
            job.await;
        }
    });
    (work, AbortOnDrop(worker))
}

/// Apply a CDS, LDS or RDS response and answer it; then ask for the route
/// configurations the listeners now name.
async fn dynamic_job(
    client: Arc<Client>,
    server: Arc<Server>,
    subs: Arc<Mutex<Subscriptions>>,
    tx: tokio::sync::mpsc::UnboundedSender<DiscoveryRequest>,
    t: ResourceType,
    resp: DiscoveryResponse,
) {
    let result = apply_dynamic(&client, &server, t, &resp.resources, None).await;
    let answer = lock(&subs).finish(&client, t, resp, result);
    let _ = tx.send(answer);
    let rds = client.dynamic.lock().await.rds_names();
    follow(&client, &subs, &tx, ResourceType::Rds, rds);
}

/// Apply CDS, LDS or RDS resources through the config compile; the names of the
/// resources. With `declared`, each resource's own name must be the one declared
/// for it (the delta protocol names resources beside them).
pub(super) async fn apply_dynamic(
    client: &Client,
    server: &Arc<Server>,
    t: ResourceType,
    resources: &[Any],
    declared: Option<&[String]>,
) -> Result<Vec<String>, Nack> {
    let acc = &client.dynamic;
    match t {
        ResourceType::Cds => {
            let v: Vec<Cluster> = decode_all(t, resources)?;
            names_match(declared, v.iter().map(|c| &c.name))?;
            dynamic::apply_clusters(server, acc, &v).await?;
            Ok(v.into_iter().map(|c| c.name).collect())
        }
        ResourceType::Lds => {
            let v: Vec<Listener> = decode_all(t, resources)?;
            names_match(declared, v.iter().map(|l| &l.name))?;
            let names = v.iter().map(|l| l.name.clone()).collect();
            dynamic::apply_listeners(server, acc, v).await?;
            Ok(names)
        }
        ResourceType::Rds => {
            let v: Vec<RouteConfiguration> = decode_all(t, resources)?;
            names_match(declared, v.iter().map(|r| &r.name))?;
            dynamic::apply_routes(server, acc, &v).await?;
            Ok(v.into_iter().map(|r| r.name).collect())
        }
        ResourceType::Eds => apply_eds(resources.to_vec(), declared.map(<[String]>::to_vec)).await,
    }
}

/// With `declared`, each resource's own name is the one declared for it.
fn names_match<'a>(
    declared: Option<&[String]>,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), Nack> {
    let Some(declared) = declared else {
        return Ok(());
    };
    for (i, (d, n)) in declared.iter().zip(names).enumerate() {
        if d != n {
            return Err(Nack {
                resource: format!("resources[{i}]"),
                field: "name".to_string(),
                message: format!("the resource is named `{d}` but carries `{n}`"),
            });
        }
    }
    Ok(())
}

pub(super) fn status(message: String) -> Status {
    Status {
        code: INVALID_ARGUMENT,
        message,
        details: Vec::new(),
    }
}

pub(super) fn node(client: &Client) -> Node {
    let s = &client.settings;
    let locality =
        (!(s.region.is_empty() && s.zone.is_empty() && s.sub_zone.is_empty())).then(|| Locality {
            region: s.region.clone(),
            zone: s.zone.clone(),
            sub_zone: s.sub_zone.clone(),
        });
    Node {
        id: s.node_id.clone(),
        cluster: s.node_cluster.clone(),
        locality,
        user_agent_name: "attache".to_string(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_string(),
        )),
        ..Default::default()
    }
}

/// Check and apply an EDS response as a whole, off the serving threads (decoding,
/// checking and diffing a 10,000-endpoint assignment takes milliseconds); the
/// names of its resources. The caller waits, so responses still apply in order.
/// With `declared`, each assignment's `cluster_name` must be the name declared for it.
pub(super) async fn apply_eds(
    resources: Vec<Any>,
    declared: Option<Vec<String>>,
) -> Result<Vec<String>, Nack> {
    let work = tokio::task::spawn_blocking(move || {
        let registry = eds::registry();
        let checked = registry.check(resources)?;
        names_match(declared.as_deref(), checked.iter().map(|c| &c.service))?;
        let names = checked.iter().map(|c| c.service.clone()).collect();
        registry.apply(checked);
        Ok(names)
    });
    work.await.unwrap_or_else(|e| {
        Err(Nack {
            resource: "eds".to_string(),
            field: "resources".to_string(),
            message: format!("internal error applying the update: {e}"),
        })
    })
}

/// Decode every resource as the message of `t`.
fn decode_all<M: Message + Default>(t: ResourceType, resources: &[Any]) -> Result<Vec<M>, Nack> {
    resources
        .iter()
        .enumerate()
        .map(|(i, any)| super::decode(t, i, any))
        .collect()
}
