//! A scripted xDS management server for the tests: the real Envoy v3 ADS service
//! (envoy-types' tonic server traits) on loopback. The test sets the EDS snapshot to
//! push; every stream that subscribes gets the current one and each later one; every
//! request the client sends (subscriptions, ACKs, NACKs) is recorded. `kill` ends
//! every stream and closes every connection it accepts from then on (the server is
//! down); `restart` serves again on the same listening socket, which the test holds
//! throughout so no other process can take the port.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HealthStatus, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use prost_otlp::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic_xds::{Request, Response, Status, Streaming};

pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// One EDS answer: version and the assignments (already encoded, so a test can send
/// garbage too).
#[derive(Clone, Default)]
pub struct Push {
    pub version: String,
    pub resources: Vec<Any>,
}

/// The delta protocol's resources: type URL → name → (version, resource).
pub type DeltaSnapshot = BTreeMap<String, BTreeMap<String, (String, Any)>>;

struct Shared {
    /// The current answer per type URL.
    push: watch::Sender<BTreeMap<String, Push>>,
    /// The resources a delta stream serves.
    delta: watch::Sender<DeltaSnapshot>,
    kill: watch::Sender<u64>,
    requests: Mutex<Vec<DiscoveryRequest>>,
    delta_requests: Mutex<Vec<DeltaDiscoveryRequest>>,
    delta_responses: Mutex<Vec<DeltaDiscoveryResponse>>,
    streams: Mutex<u64>,
}

#[derive(Clone)]
pub struct Ads(Arc<Shared>);

/// A loopback address held for a management server that starts later: bound but not
/// listening, so the proxy's connections to it are refused (the server is down) and
/// no other socket can take the port meanwhile.
pub struct Reserved(tokio::net::TcpSocket);

impl Reserved {
    pub fn new() -> Reserved {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        Reserved(s)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("addr")
    }
}

/// A running management server.
pub struct Mgmt {
    pub addr: SocketAddr,
    ads: Ads,
    listener: Arc<tokio::net::TcpListener>,
    stop: watch::Sender<bool>,
}

/// A killed management server: its listening socket, still held, closes every
/// connection it accepts (to a client, the server is down).
pub struct Down {
    listener: Arc<tokio::net::TcpListener>,
    ads: Ads,
    refuser: tokio::task::JoinHandle<()>,
}

impl Down {
    /// Every delta request the server had received.
    pub fn delta_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        self.ads.0.delta_requests.lock().expect("requests").clone()
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        self.refuser.abort();
    }
}

/// A proxy config: a listener routing `/static` to a direct response and the rest
/// to cluster `app` (EDS service `app_svc`) from the management server at `mgmt`;
/// `xds_extra` is more `xds:` keys (each line indented by two spaces).
pub fn proxy_config(mgmt: SocketAddr, initial_fetch: &str, xds_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ path: /static }}
            direct_response: {{ status: 200, body: "static\n" }}
          - match: {{ prefix: / }}
            route: {{ cluster: app, retries: {{ attempts: 2, retry_on: [connect-failure, reset] }} }}
clusters:
  - name: xds_server
    protocol: http2
    endpoints: ["{mgmt}"]
  - name: app
    discovery: {{ eds: {{ service_name: app_svc }} }}
xds:
  cluster: xds_server
  node: {{ id: attache-test, cluster: edge, locality: {{ zone: z1 }} }}
  initial_fetch_timeout: {initial_fetch}
  backoff: 100ms
  max_backoff: 400ms
{xds_extra}"#
    )
}

/// An endpoint of an assignment: address, weight, health.
pub fn ep(addr: SocketAddr, weight: u32, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        health_status: health as i32,
        load_balancing_weight: Some(UInt32Value { value: weight }),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: addr.ip().to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                        addr.port(),
                    ))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An assignment for `service` with one locality in `zone`.
pub fn cla(service: &str, zone: &str, eps: Vec<LbEndpoint>) -> Any {
    let c = ClusterLoadAssignment {
        cluster_name: service.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality {
                zone: zone.to_string(),
                ..Default::default()
            }),
            lb_endpoints: eps,
            ..Default::default()
        }],
        ..Default::default()
    };
    Any {
        type_url: EDS.to_string(),
        value: c.encode_to_vec(),
    }
}

/// A CDS cluster `name` of type STATIC with `endpoints` (healthy, weight 1).
pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Any {
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    let c = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: endpoints
                    .iter()
                    .map(|a| ep(*a, 1, HealthStatus::Healthy))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    Any {
        type_url: CDS.to_string(),
        value: c.encode_to_vec(),
    }
}

/// A route configuration `name`: every path of every host to `cluster`.
pub fn routes(name: &str, cluster: &str) -> Any {
    use envoy_types::pb::envoy::config::route::v3 as rds;
    let route = rds::Route {
        r#match: Some(rds::RouteMatch {
            path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(rds::route::Action::Route(rds::RouteAction {
            cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    };
    let rc = rds::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![rds::VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    };
    Any {
        type_url: RDS.to_string(),
        value: rc.encode_to_vec(),
    }
}

/// An HTTP listener `name` on 127.0.0.1 port 0 (the proxy binds a free one,
/// `/listeners` says which) whose routes come over RDS as `route_config_name`.
pub fn rds_listener(name: &str, route_config_name: &str) -> Any {
    use envoy_types::pb::envoy::config::listener::v3 as lds;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
    let h = hcm::HttpConnectionManager {
        stat_prefix: name.into(),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            ..Default::default()
        }],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                route_config_name: route_config_name.into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let l = lds::Listener {
        name: name.into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![lds::FilterChain {
            filters: vec![lds::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(lds::filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager".into(),
                    value: h.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Any {
        type_url: LDS.to_string(),
        value: l.encode_to_vec(),
    }
}

impl Mgmt {
    pub async fn start() -> Mgmt {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve_on(Arc::new(l), None)
    }

    /// Serve again on the killed server's socket, with its state (a restart).
    pub fn restart(down: Down) -> Mgmt {
        down.refuser.abort();
        Self::serve_on(down.listener.clone(), Some(down.ads.clone()))
    }

    /// Start listening on an address held since [`Reserved::new`].
    pub fn start_reserved(r: Reserved) -> Mgmt {
        Self::serve_on(Arc::new(r.0.listen(128).expect("listen")), None)
    }

    fn serve_on(l: Arc<tokio::net::TcpListener>, ads: Option<Ads>) -> Mgmt {
        let addr = l.local_addr().expect("addr");
        let ads = ads.unwrap_or_else(|| {
            Ads(Arc::new(Shared {
                push: watch::channel(Default::default()).0,
                delta: watch::channel(Default::default()).0,
                kill: watch::channel(0).0,
                requests: Mutex::new(Vec::new()),
                delta_requests: Mutex::new(Vec::new()),
                delta_responses: Mutex::new(Vec::new()),
                streams: Mutex::new(0),
            }))
        });
        let (stop, stopped) = watch::channel(false);
        let svc = AggregatedDiscoveryServiceServer::new(ads.clone());
        tokio::spawn(serve(l.clone(), svc, stopped));
        Mgmt {
            addr,
            ads,
            listener: l,
            stop,
        }
    }

    /// Push a new EDS snapshot to every subscribed stream (and to later ones).
    pub fn push(&self, version: &str, resources: Vec<Any>) {
        self.push_type(EDS, version, resources);
    }

    /// Push a new snapshot of `type_url`.
    pub fn push_type(&self, type_url: &str, version: &str, resources: Vec<Any>) {
        self.ads.0.push.send_modify(|m| {
            m.insert(
                type_url.to_string(),
                Push {
                    version: version.to_string(),
                    resources,
                },
            );
        });
    }

    /// Delta: serve resource `name` of `type_url` at `version` (`None`: remove it).
    pub fn delta_set(&self, type_url: &str, name: &str, resource: Option<(&str, Any)>) {
        self.ads.0.delta.send_modify(|m| {
            let of_type = m.entry(type_url.to_string()).or_default();
            match resource {
                Some((version, any)) => {
                    of_type.insert(name.to_string(), (version.to_string(), any));
                }
                None => {
                    of_type.remove(name);
                }
            }
        });
    }

    /// Every delta request received so far.
    pub fn delta_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        self.ads.0.delta_requests.lock().expect("requests").clone()
    }

    /// Every delta response sent so far.
    pub fn delta_responses(&self) -> Vec<DeltaDiscoveryResponse> {
        self.ads
            .0
            .delta_responses
            .lock()
            .expect("responses")
            .clone()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.ads.0.requests.lock().expect("requests").clone()
    }

    /// Streams opened so far.
    pub fn streams(&self) -> u64 {
        *self.ads.0.streams.lock().expect("streams")
    }

    /// End every stream (UNAVAILABLE) and every connection; until [`Mgmt::restart`],
    /// each new connection is closed at once.
    pub fn kill(self) -> Down {
        self.ads.0.kill.send_modify(|n| *n += 1);
        let _ = self.stop.send(true);
        let l = self.listener.clone();
        let refuser = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        Down {
            listener: self.listener.clone(),
            ads: self.ads.clone(),
            refuser,
        }
    }
}

/// Accept HTTP/2 connections until `stop`, which also drops every open connection.
async fn serve(
    l: Arc<tokio::net::TcpListener>,
    svc: AggregatedDiscoveryServiceServer<Ads>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let s = tokio::select! {
            r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let conn =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}

#[tonic_xds::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        *self.0.streams.lock().expect("streams") += 1;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let shared = self.0.clone();
        tokio::spawn(async move {
            let mut push = shared.push.subscribe();
            let mut kill = shared.kill.subscribe();
            let mut subscribed = BTreeSet::new();
            let mut sent = BTreeMap::<String, String>::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    r = inbound.message() => match r {
                        Ok(Some(req)) => {
                            // EDS without names is not a subscription.
                            if req.type_url != EDS || !req.resource_names.is_empty() {
                                subscribed.insert(req.type_url.clone());
                            }
                            shared.requests.lock().expect("requests").push(req);
                        }
                        _ => return,
                    },
                    r = push.changed() => if r.is_err() { return },
                    _ = kill.changed() => {
                        let _ = tx.send(Err(Status::unavailable("management server killed"))).await;
                        return;
                    }
                }
                let all = push.borrow_and_update().clone();
                for t in &subscribed {
                    let Some(p) = all.get(t) else { continue };
                    if p.version.is_empty() || sent.get(t) == Some(&p.version) {
                        continue;
                    }
                    sent.insert(t.clone(), p.version.clone());
                    nonce += 1;
                    let resp = DiscoveryResponse {
                        version_info: p.version.clone(),
                        resources: p.resources.clone(),
                        type_url: t.clone(),
                        nonce: nonce.to_string(),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let stream = {
            let mut n = self.0.streams.lock().expect("streams");
            *n += 1;
            *n
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(delta_stream(self.0.clone(), stream, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What one delta stream subscribed to and what its client holds, per type.
#[derive(Default)]
struct DeltaSub {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name → version the client has (its `initial_resource_versions`, then what
    /// was sent).
    known: BTreeMap<String, String>,
}

/// Serve one delta stream: on every request and every snapshot change, send each
/// subscribed type what the client does not have yet and what it has that is gone.
async fn delta_stream(
    shared: Arc<Shared>,
    stream: u64,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let mut snapshot = shared.delta.subscribe();
    let mut kill = shared.kill.subscribe();
    let mut subs: BTreeMap<String, DeltaSub> = BTreeMap::new();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            r = inbound.message() => match r {
                Ok(Some(req)) => {
                    let first = !subs.contains_key(&req.type_url);
                    let sub = subs.entry(req.type_url.clone()).or_default();
                    if first {
                        sub.wildcard = req.resource_names_subscribe.is_empty()
                            && (req.type_url == CDS || req.type_url == LDS);
                        sub.known = req.initial_resource_versions.clone().into_iter().collect();
                    }
                    sub.names.extend(req.resource_names_subscribe.iter().cloned());
                    for n in &req.resource_names_unsubscribe {
                        sub.names.remove(n);
                        sub.known.remove(n);
                    }
                    shared.delta_requests.lock().expect("requests").push(req);
                }
                _ => return,
            },
            r = snapshot.changed() => if r.is_err() { return },
            _ = kill.changed() => {
                let _ = tx.send(Err(Status::unavailable("management server killed"))).await;
                return;
            }
        }
        let all = snapshot.borrow_and_update().clone();
        for (t, sub) in subs.iter_mut() {
            let empty = BTreeMap::new();
            let have = all.get(t).unwrap_or(&empty);
            let wanted = |n: &String| sub.wildcard || sub.names.contains(n);
            let resources: Vec<Resource> = have
                .iter()
                .filter(|(n, (v, _))| wanted(n) && sub.known.get(*n) != Some(v))
                .map(|(n, (v, any))| Resource {
                    name: n.clone(),
                    version: v.clone(),
                    resource: Some(any.clone()),
                    ..Default::default()
                })
                .collect();
            let removed: Vec<String> = sub
                .known
                .keys()
                .filter(|n| !have.contains_key(*n))
                .cloned()
                .collect();
            if resources.is_empty() && removed.is_empty() {
                continue;
            }
            for r in &resources {
                sub.known.insert(r.name.clone(), r.version.clone());
            }
            for n in &removed {
                sub.known.remove(n);
            }
            nonce += 1;
            let resp = DeltaDiscoveryResponse {
                system_version_info: format!("s{stream}-{nonce}"),
                resources,
                type_url: t.clone(),
                removed_resources: removed,
                nonce: format!("s{stream}-{nonce}"),
                ..Default::default()
            };
            shared
                .delta_responses
                .lock()
                .expect("responses")
                .push(resp.clone());
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
}
