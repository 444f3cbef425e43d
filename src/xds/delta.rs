//! The ADS stream, incremental (delta) protocol (`api_type: aggregated_delta_grpc`,
//! `DeltaAggregatedResources`). Each type subscribes with `resource_names_subscribe`
//! (EDS and RDS by name, CDS and LDS as a wildcard) and follows the names it wants
//! with subscribe / unsubscribe requests; the server sends only what changed, each
//! resource with its own version, and `removed_resources`. A response is checked
//! as a whole through the same translation and checks as state of the world, then
//! ACKed (its nonce) or NACKed (its nonce and an `error_detail` with attache's
//! message); nothing of a NACKed response is kept. The accepted resources and their
//! versions outlive the stream: a new stream sends them as
//! `initial_resource_versions`, so the server resends only what changed meanwhile.
//!
//! How a change applies: EDS assignments that changed are checked and applied like
//! a state-of-the-world EDS response (off the serving threads); a removed
//! assignment is forgotten but its clusters keep their endpoints (as Envoy: an EDS
//! cluster loses its endpoints when CDS removes the cluster). CDS and LDS apply the
//! whole accepted set with the change, so a removed cluster or listener goes as in
//! state of the world; changed route configurations replace those of the same name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;

use super::ads::{
    apply_dynamic, apply_eds, follow, lock, node, open, outbound, serial, status, subscribe_all,
    Subscribe,
};
use super::{eds, short_name, transport, type_of, type_url, Client, ResourceType};
use crate::config::from_xds::{nack, Nack};
use crate::server::Server;

/// One accepted resource, kept across streams (the resource of CDS and LDS only).
struct Kept {
    version: String,
    resource: Any,
}

/// Every accepted resource per type, by name.
#[derive(Default)]
pub(super) struct Held(BTreeMap<ResourceType, BTreeMap<String, Kept>>);

impl Held {
    /// The versions to send as `initial_resource_versions` for `names` (all held
    /// names of a wildcard type).
    fn versions(
        &self,
        t: ResourceType,
        names: Option<&BTreeSet<String>>,
    ) -> HashMap<String, String> {
        self.0
            .get(&t)
            .into_iter()
            .flatten()
            .filter(|(n, _)| names.is_none_or(|w| w.contains(*n)))
            .map(|(n, k)| (n.clone(), k.version.clone()))
            .collect()
    }

    /// The names and resources of `t` once `u` applied, by name.
    fn after(&self, u: &Update) -> (Vec<String>, Vec<Any>) {
        let mut all: BTreeMap<&String, &Any> = self
            .0
            .get(&u.t)
            .into_iter()
            .flatten()
            .map(|(n, k)| (n, &k.resource))
            .collect();
        for n in &u.removed {
            all.remove(n);
        }
        for c in &u.changed {
            all.insert(&c.name, &c.resource);
        }
        all.into_iter().map(|(n, a)| (n.clone(), a.clone())).unzip()
    }

    /// Keep what `u` changed. Only CDS and LDS need the resources themselves
    /// (each update applies the whole set); EDS and RDS keep versions alone, so a
    /// large assignment is not held twice (the EDS registry keeps its encoding).
    fn commit(&mut self, u: Update) {
        let whole_set = matches!(u.t, ResourceType::Cds | ResourceType::Lds);
        let held = self.0.entry(u.t).or_default();
        for n in &u.removed {
            held.remove(n);
        }
        for c in u.changed {
            let resource = if whole_set {
                c.resource
            } else {
                Any::default()
            };
            let version = c.version;
            held.insert(c.name, Kept { version, resource });
        }
    }

    fn forget(&mut self, t: ResourceType, names: &BTreeSet<String>) {
        if let Some(held) = self.0.get_mut(&t) {
            held.retain(|n, _| !names.contains(n));
        }
    }
}

/// One changed resource of a response.
struct Changed {
    name: String,
    version: String,
    resource: Any,
}

/// A response that passed the protocol checks, to be applied.
struct Update {
    t: ResourceType,
    nonce: String,
    system_version: String,
    changed: Vec<Changed>,
    removed: Vec<String>,
}

type Tx = tokio::sync::mpsc::UnboundedSender<DeltaDiscoveryRequest>;

/// Run the delta ADS stream over a connected service until it fails.
pub(super) async fn stream(
    client: &Arc<Client>,
    server: &Arc<Server>,
    svc: transport::H2,
    origin: http::Uri,
    answered: &mut bool,
) -> String {
    let mut grpc = AggregatedDiscoveryServiceClient::with_origin(svc, origin);
    let (tx, outbound) = outbound::<DeltaDiscoveryRequest>();
    let subs = Arc::new(Mutex::new(Subscriptions::new(client)));
    subscribe_all(client, &subs, &tx).await;
    let (work, _worker) = serial();
    let mut inbound = match open(client, grpc.delta_aggregated_resources(outbound)).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let registry = eds::registry();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(resp)) => {
                    *answered = true;
                    match take(client, resp) {
                        Err(answer) => { let _ = tx.send(*answer); }
                        Ok(u) if u.t == ResourceType::Eds => {
                            respond(client, server, &subs, &tx, u).await;
                        }
                        Ok(u) => {
                            let job = dynamic_job(client.clone(), server.clone(), subs.clone(), tx.clone(), u);
                            let _ = work.send(Box::pin(job));
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

/// Apply a CDS, LDS or RDS update and answer it; then follow the route
/// configurations the listeners now name.
async fn dynamic_job(
    client: Arc<Client>,
    server: Arc<Server>,
    subs: Arc<Mutex<Subscriptions>>,
    tx: Tx,
    u: Update,
) {
    respond(&client, &server, &subs, &tx, u).await;
    let rds = client.dynamic.lock().await.rds_names();
    follow(&client, &subs, &tx, ResourceType::Rds, rds);
}

/// Apply an update, record it and send its ACK or NACK.
async fn respond(
    client: &Client,
    server: &Arc<Server>,
    subs: &Mutex<Subscriptions>,
    tx: &Tx,
    u: Update,
) {
    let (t, nonce) = (u.t, u.nonce.clone());
    let result = apply(client, server, &u).await;
    let nack = match result {
        Ok(()) => {
            tracing::info!(r#type = short_name(t), version = %u.system_version, changed = u.changed.len(), removed = u.removed.len(), "xds update accepted");
            let versions: Vec<(String, String)> = u
                .changed
                .iter()
                .map(|c| (c.name.clone(), c.version.clone()))
                .collect();
            client.accepted_each(t, &u.system_version, versions, &u.removed);
            lock(&client.held).commit(u);
            None
        }
        Err(nack) => {
            let message = nack.to_string();
            tracing::warn!(r#type = short_name(t), version = %u.system_version, error = %message, "xds update rejected; keeping the last accepted state");
            client.rejected(t, &message);
            Some(status(message))
        }
    };
    let _ = tx.send(lock(subs).answer(t, nonce, nack));
}

/// Check and apply an update as a whole.
async fn apply(client: &Client, server: &Arc<Server>, u: &Update) -> Result<(), Nack> {
    match u.t {
        ResourceType::Eds if u.changed.is_empty() => Ok(()),
        ResourceType::Eds | ResourceType::Rds => {
            let names: Vec<String> = u.changed.iter().map(|c| c.name.clone()).collect();
            let resources: Vec<Any> = u.changed.iter().map(|c| c.resource.clone()).collect();
            if u.t == ResourceType::Eds {
                apply_eds(resources, Some(names)).await?;
            } else if !resources.is_empty() {
                apply_dynamic(client, server, u.t, &resources, Some(&names)).await?;
            }
            Ok(())
        }
        ResourceType::Cds | ResourceType::Lds => {
            let (names, resources) = lock(&client.held).after(u);
            apply_dynamic(client, server, u.t, &resources, Some(&names)).await?;
            Ok(())
        }
    }
}

/// The protocol checks of a response: its type, and each resource's name, body and
/// what attache does not support (TTLs, aliases, xdstp names). A failure is the
/// NACK to send.
fn take(
    client: &Client,
    resp: DeltaDiscoveryResponse,
) -> Result<Update, Box<DeltaDiscoveryRequest>> {
    let refuse = |message: String| {
        Box::new(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(status(message)),
            ..Default::default()
        })
    };
    let Some(t) = type_of(&resp.type_url).filter(|t| client.settings.types.contains(t)) else {
        tracing::warn!(type_url = %resp.type_url, "xds response of a type attache did not ask for; rejected");
        return Err(refuse(format!(
            "attache did not subscribe to {}",
            resp.type_url
        )));
    };
    check_resources(t, &resp).map_err(|n| {
        let message = n.to_string();
        tracing::warn!(r#type = short_name(t), error = %message, "xds update rejected; keeping the last accepted state");
        client.rejected(t, &message);
        refuse(message)
    })?;
    let changed = resp
        .resources
        .into_iter()
        .filter_map(|r| {
            Some(Changed {
                resource: r.resource?,
                name: r.name,
                version: r.version,
            })
        })
        .collect();
    Ok(Update {
        t,
        nonce: resp.nonce,
        system_version: resp.system_version_info,
        changed,
        removed: resp.removed_resources,
    })
}

/// Every resource of `resp` is one attache can take.
fn check_resources(t: ResourceType, resp: &DeltaDiscoveryResponse) -> Result<(), Nack> {
    if !resp.removed_resource_names.is_empty() {
        return Err(nack(
            "",
            "removed_resource_names",
            "xdstp resource names are not supported; name removed resources in `removed_resources`",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, r) in resp.resources.iter().enumerate() {
        check_resource(t, i, r)?;
        if !seen.insert(r.name.as_str()) {
            return Err(nack(
                &r.name,
                &format!("resources[{i}].name"),
                "the response carries this resource twice",
            ));
        }
    }
    if let Some(n) = resp
        .removed_resources
        .iter()
        .find(|n| seen.contains(n.as_str()))
    {
        return Err(nack(
            n,
            "removed_resources",
            "the response both updates and removes this resource",
        ));
    }
    Ok(())
}

fn check_resource(t: ResourceType, i: usize, r: &Resource) -> Result<(), Nack> {
    let at = |field: &str| format!("resources[{i}].{field}");
    if r.name.is_empty() {
        return Err(nack("", &at("name"), "a resource needs a name"));
    }
    if r.resource_name.is_some() {
        return Err(nack(
            &r.name,
            &at("resource_name"),
            "xdstp resource names are not supported",
        ));
    }
    if !r.aliases.is_empty() {
        return Err(nack(
            &r.name,
            &at("aliases"),
            "resource aliases (VHDS) are not supported",
        ));
    }
    if r.ttl.is_some() {
        return Err(nack(
            &r.name,
            &at("ttl"),
            "resource TTLs are not supported; send resources without `ttl`",
        ));
    }
    match &r.resource {
        None => Err(nack(
            &r.name,
            &at("resource"),
            "a resource without a body (a TTL heartbeat) is not supported",
        )),
        Some(a) if a.type_url != type_url(t) => Err(nack(
            &r.name,
            &at("resource.type_url"),
            format!("`{}` in a {} response", a.type_url, short_name(t)),
        )),
        Some(_) => Ok(()),
    }
}

/// What this stream subscribed to, per type.
struct Subscriptions {
    node: Option<Node>,
    names: BTreeMap<ResourceType, BTreeSet<String>>,
}

impl Subscriptions {
    fn new(client: &Client) -> Subscriptions {
        Subscriptions {
            node: Some(node(client)),
            names: BTreeMap::new(),
        }
    }

    /// The ACK (no `nack`) or NACK of the response with `nonce`.
    fn answer(
        &mut self,
        t: ResourceType,
        nonce: String,
        nack: Option<envoy_types::pb::google::rpc::Status>,
    ) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: type_url(t).to_string(),
            response_nonce: nonce,
            error_detail: nack,
            ..Default::default()
        }
    }
}

impl Subscribe for Subscriptions {
    type Request = DeltaDiscoveryRequest;

    /// The first request of `t` on this stream, with the versions held of what it
    /// asks for (EDS and RDS: once something wants a name; CDS and LDS: wildcard).
    fn initial(
        &mut self,
        client: &Client,
        t: ResourceType,
        names: BTreeSet<String>,
    ) -> Option<DeltaDiscoveryRequest> {
        let wildcard = matches!(t, ResourceType::Cds | ResourceType::Lds);
        if !wildcard && names.is_empty() {
            return None;
        }
        let versions = lock(&client.held).versions(t, (!wildcard).then_some(&names));
        let r = DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: type_url(t).to_string(),
            resource_names_subscribe: names.iter().cloned().collect(),
            initial_resource_versions: versions,
            ..Default::default()
        };
        self.names.insert(t, names);
        Some(r)
    }

    /// Subscribe and unsubscribe when the names wanted of `t` changed.
    fn names_changed(
        &mut self,
        client: &Client,
        t: ResourceType,
        now: BTreeSet<String>,
    ) -> Option<DeltaDiscoveryRequest> {
        if !client.settings.types.contains(&t) {
            return None;
        }
        let Some(old) = self.names.get(&t) else {
            return self.initial(client, t, now);
        };
        if *old == now {
            return None;
        }
        let gone: BTreeSet<String> = old.difference(&now).cloned().collect();
        let new: Vec<String> = now.difference(old).cloned().collect();
        lock(&client.held).forget(t, &gone);
        client.forget(t, &gone);
        self.names.insert(t, now);
        Some(DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: type_url(t).to_string(),
            resource_names_subscribe: new,
            resource_names_unsubscribe: gone.into_iter().collect(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Duration;

    use super::*;

    fn resource(name: &str, t: ResourceType) -> Resource {
        Resource {
            name: name.to_string(),
            version: "1".to_string(),
            resource: Some(Any {
                type_url: type_url(t).to_string(),
                value: Vec::new(),
            }),
            ..Default::default()
        }
    }

    fn refusal(resources: Vec<Resource>, removed: &[&str]) -> Option<String> {
        let resp = DeltaDiscoveryResponse {
            type_url: type_url(ResourceType::Eds).to_string(),
            resources,
            removed_resources: removed.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        check_resources(ResourceType::Eds, &resp)
            .err()
            .map(|n| n.to_string())
    }

    #[test]
    fn resources_attache_cannot_take_are_refused_by_field() {
        let eds = |n: &str| resource(n, ResourceType::Eds);
        assert_eq!(refusal(vec![eds("a"), eds("b")], &["c"]), None);
        assert_eq!(
            refusal(vec![eds("a"), eds("a")], &[]).as_deref(),
            Some("a: resources[1].name: the response carries this resource twice")
        );
        assert_eq!(
            refusal(vec![eds("a")], &["a"]).as_deref(),
            Some("a: removed_resources: the response both updates and removes this resource")
        );
        assert_eq!(
            refusal(vec![resource("a", ResourceType::Cds)], &[]).as_deref(),
            Some("a: resources[0].resource.type_url: `type.googleapis.com/envoy.config.cluster.v3.Cluster` in a eds response")
        );
        let mut ttl = eds("a");
        ttl.ttl = Some(Duration {
            seconds: 5,
            nanos: 0,
        });
        assert!(refusal(vec![ttl], &[]).is_some_and(|m| m.starts_with("a: resources[0].ttl: ")));
        let mut heartbeat = eds("a");
        heartbeat.resource = None;
        assert!(refusal(vec![heartbeat], &[])
            .is_some_and(|m| m.starts_with("a: resources[0].resource: ")));
        let mut alias = eds("a");
        alias.aliases = vec!["b".to_string()];
        assert!(
            refusal(vec![alias], &[]).is_some_and(|m| m.starts_with("a: resources[0].aliases: "))
        );
        assert!(refusal(vec![eds("")], &[])
            .is_some_and(|m| m.contains("resources[0].name: a resource needs a name")));
    }

    #[test]
    fn held_versions_follow_commits_and_unsubscriptions() {
        let mut held = Held::default();
        let changed = |name: &str, version: &str| Changed {
            name: name.to_string(),
            version: version.to_string(),
            resource: Any::default(),
        };
        held.commit(Update {
            t: ResourceType::Cds,
            nonce: String::new(),
            system_version: String::new(),
            changed: vec![changed("a", "1"), changed("b", "1")],
            removed: Vec::new(),
        });
        let u = Update {
            t: ResourceType::Cds,
            nonce: String::new(),
            system_version: String::new(),
            changed: vec![changed("c", "2")],
            removed: vec!["a".to_string()],
        };
        assert_eq!(held.after(&u).0, ["b", "c"]);
        held.commit(u);
        let all = held.versions(ResourceType::Cds, None);
        assert_eq!(all.len(), 2);
        assert_eq!((all["b"].as_str(), all["c"].as_str()), ("1", "2"));
        let only_b = BTreeSet::from(["b".to_string()]);
        assert_eq!(held.versions(ResourceType::Cds, Some(&only_b)).len(), 1);
        held.forget(ResourceType::Cds, &only_b);
        assert_eq!(held.versions(ResourceType::Cds, None).len(), 1);
        assert!(held.versions(ResourceType::Eds, None).is_empty());
    }
}
