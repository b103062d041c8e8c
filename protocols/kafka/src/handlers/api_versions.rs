//! ApiVersions: the list of APIs and version ranges this broker serves.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

use crate::guard;

/// APIs served, with the version range each is served at (guard ∩ handler support).
const SERVED: &[i16] = &[
    0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 32, 33, 37, 42, 44, 60,
];

/// `(api key, min version, max version)` for every served API.
pub fn supported() -> Vec<(i16, i16, i16)> {
    SERVED
        .iter()
        .filter_map(|k| {
            let (min, max) = guard::supported_versions(*k)?;
            // Produce is advertised from v0 (old librdkafka enables compression only then,
            // KAFKA-18659); v0-v2 requests themselves are answered as unsupported.
            let min = if *k == 0 { 0 } else { min };
            Some((*k, min, max))
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
