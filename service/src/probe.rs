//! `remotemedia-server probe`: asks the health service whether the server is SERVING, for
//! container health checks.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Ok when the server at `addr` (`host:port` or a URL) reports SERVING for `service`.
pub async fn probe(addr: &str, service: &str, timeout: Duration) -> Result<(), String> {
    let url = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| format!("invalid address {addr}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .map_err(|s| format!("health check failed: {} ({:?})", s.message(), s.code()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("server reports {}", other.as_str_name())),
    }
}
