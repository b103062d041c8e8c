//! ACL administration (DescribeAcls, CreateAcls, DeleteAcls). Conflux has no authorizer
//! yet, so these answer exactly as an Apache Kafka broker without `authorizer.class.name`
//! does: `SECURITY_DISABLED` with Kafka's message, rather than closing the connection.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};

use super::s;
use crate::errors::code;

/// The message Apache Kafka sends with `SECURITY_DISABLED`.
const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

/// DescribeAcls: `SECURITY_DISABLED`.
pub fn describe(_req: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(code::SECURITY_DISABLED)
        .with_error_message(Some(s(NO_AUTHORIZER)))
}

/// CreateAcls: `SECURITY_DISABLED` for every creation.
pub fn create(req: CreateAclsRequest) -> CreateAclsResponse {
    CreateAclsResponse::default().with_results(
        req.creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code::SECURITY_DISABLED)
                    .with_error_message(Some(s(NO_AUTHORIZER)))
            })
            .collect(),
    )
}

/// DeleteAcls: `SECURITY_DISABLED` for every filter.
pub fn delete(req: DeleteAclsRequest) -> DeleteAclsResponse {
    DeleteAclsResponse::default().with_filter_results(
        req.filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code::SECURITY_DISABLED)
                    .with_error_message(Some(s(NO_AUTHORIZER)))
            })
            .collect(),
    )
}
