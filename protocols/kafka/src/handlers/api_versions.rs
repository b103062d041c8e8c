//! ApiVersions: the list of APIs and version ranges this broker serves.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

use crate::guard;

/// `(api key, min version, max version)` for every served API: exactly the APIs the request
/// guard has schemas for (the guard is the one list of what is served; dispatch handles each).
pub fn supported() -> Vec<(i16, i16, i16)> {
    guard::served()
        .map(|(k, min, max)| {
            // Produce is advertised from v0 (old librdkafka enables compression only then,
            // KAFKA-18659); v0-v2 requests themselves are answered as unsupported.
            let min = if k == 0 { 0 } else { min };
            (k, min, max)
        })
        .collect()
}

/// The ApiVersions answer.
pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        supported()
            .into_iter()
            .map(|(k, min, max)| {
                ApiVersion::default()
                    .with_api_key(k)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}
