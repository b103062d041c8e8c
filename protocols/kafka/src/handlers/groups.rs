//! Wire side of consumer groups: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use core_stream::{CommittedOffset, GroupOffset};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;

use super::{s, Ctx};
use crate::errors::{code, error_code};
use crate::group::{self, GroupState};
use crate::KafkaBroker;

/// This broker coordinates every group.
pub fn find_coordinator(
    b: &KafkaBroker,
    ctx: &Ctx,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let node = BrokerId(b.config.node_id);
    let host = s(b.config.advertised_host.clone());
    let port = i32::from(b.config.advertised_port);
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|k| {
                Coordinator::default()
                    .with_key(k)
                    .with_node_id(node)
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port)
    }
}

/// JoinGroup: waits for the round to complete.
/// The membership change happens now (in request order); the returned future waits for the round.
pub fn join(
    b: &KafkaBroker,
    ctx: Ctx,
    req: JoinGroupRequest,
) -> impl Future<Output = JoinGroupResponse> + Send {
    let session = req.session_timeout_ms;
    let rx = (1000..=30 * 60 * 1000)
        .contains(&session)
        .then(|| join_now(b, &ctx, req));
    async move {
        let Some(rx) = rx else {
            return JoinGroupResponse::default()
                .with_error_code(code::INVALID_SESSION_TIMEOUT)
                .with_generation_id(-1);
        };
        join_answer(&ctx, rx.await)
    }
}

fn join_now(
    b: &KafkaBroker,
    ctx: &Ctx,
    req: JoinGroupRequest,
) -> tokio::sync::oneshot::Receiver<group::JoinResult> {
    let session = req.session_timeout_ms;
    let rebalance = if ctx.version >= 1 {
        req.rebalance_timeout_ms
    } else {
        session
    };
    b.groups.join(group::JoinRequest {
        group: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        session_timeout: Duration::from_millis(session as u64),
        rebalance_timeout: Duration::from_millis(rebalance.max(0) as u64),
    })
}

fn join_answer(
    ctx: &Ctx,
    r: Result<group::JoinResult, tokio::sync::oneshot::error::RecvError>,
) -> JoinGroupResponse {
    let r = match r {
        Ok(r) => r,
        Err(_) => {
            return JoinGroupResponse::default()
                .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
                .with_generation_id(-1)
        }
    };
    JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.filter(|_| ctx.version >= 7).map(s))
        .with_protocol_name(r.protocol.map(s))
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, inst, meta)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(inst.map(s))
                        .with_metadata(meta)
                })
                .collect(),
        )
}

/// SyncGroup: the leader hands out assignments; everyone waits for theirs.
/// The leader's assignment is applied now (in request order); the future waits for this member's.
pub fn sync(
    b: &KafkaBroker,
    ctx: Ctx,
    req: SyncGroupRequest,
) -> impl Future<Output = SyncGroupResponse> + Send {
    let rx = b.groups.sync(
        &req.group_id.0,
        &req.member_id,
        req.generation_id,
        req.assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    );
    async move {
        match rx.await {
            Ok(r) => SyncGroupResponse::default()
                .with_error_code(r.error)
                .with_assignment(r.assignment)
                .with_protocol_name(r.protocol.filter(|_| ctx.version >= 5).map(s))
                .with_protocol_type(r.protocol_type.filter(|_| ctx.version >= 5).map(s)),
            Err(_) => SyncGroupResponse::default().with_error_code(code::REBALANCE_IN_PROGRESS),
        }
    }
}

/// Heartbeat.
pub fn heartbeat(b: &KafkaBroker, req: HeartbeatRequest) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(b.groups.heartbeat(
        &req.group_id.0,
        &req.member_id,
        req.generation_id,
    ))
}

/// LeaveGroup (v0-2 one member, v3+ a list).
pub fn leave(b: &KafkaBroker, ctx: &Ctx, req: LeaveGroupRequest) -> LeaveGroupResponse {
    if ctx.version < 3 {
        let codes = b
            .groups
            .leave(&req.group_id.0, &[req.member_id.to_string()]);
        return LeaveGroupResponse::default()
            .with_error_code(codes.first().copied().unwrap_or(code::NONE));
    }
    let ids: Vec<String> = req
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    let codes = b.groups.leave(&req.group_id.0, &ids);
    LeaveGroupResponse::default().with_members(
        req.members
            .into_iter()
            .zip(codes)
            .map(|(m, c)| {
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(c)
            })
            .collect(),
    )
}

/// OffsetCommit: validated against the group generation, stored durably in the core.
pub fn offset_commit(b: &KafkaBroker, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let check = b
        .groups
        .check_commit(&group, &req.member_id, req.generation_id_or_member_epoch);
    let mut to_store = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let stream = b.core.stream(&t.name.0);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut c = check;
            if c == code::NONE {
                c = match super::partition_of(stream.as_ref(), &t.name.0, p.partition_index) {
                    Ok(_) => code::NONE,
                    Err(e) => error_code(&e),
                };
            }
            if c == code::NONE {
                to_store.push(GroupOffset {
                    stream: t.name.0.to_string(),
                    partition: p.partition_index,
                    committed: CommittedOffset {
                        offset: p.committed_offset,
                        attachment: attachment(
                            p.committed_leader_epoch,
                            p.committed_metadata.as_deref().unwrap_or(""),
                        ),
                    },
                });
            }
            parts.push((p.partition_index, c));
        }
        topics.push((t.name, parts));
    }
    if !to_store.is_empty() {
        if let Err(e) = b.core.commit_offsets(&group, &to_store) {
            let c = error_code(&e);
            for (_, parts) in topics.iter_mut() {
                for p in parts.iter_mut().filter(|p| p.1 == code::NONE) {
                    p.1 = c;
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, parts)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(i, c)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(i)
                                    .with_error_code(c)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// OffsetFetch (v1-7): committed positions, -1 where none.
pub fn offset_fetch(b: &KafkaBroker, ctx: &Ctx, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = req.group_id.0.to_string();
    let stored = match b.core.group_offsets(&group) {
        Ok(v) => v,
        Err(e) if ctx.version >= 2 => {
            return OffsetFetchResponse::default().with_error_code(error_code(&e))
        }
        Err(_) => Vec::new(),
    };
    let mut by_topic: HashMap<String, Vec<(i32, CommittedOffset)>> = HashMap::new();
    for o in stored {
        by_topic
            .entry(o.stream)
            .or_default()
            .push((o.partition, o.committed));
    }
    let part = |idx: i32, c: Option<&CommittedOffset>| {
        let r = OffsetFetchResponsePartition::default().with_partition_index(idx);
        match c {
            Some(c) => {
                let (epoch, metadata) = from_attachment(&c.attachment);
                r.with_committed_offset(c.offset)
                    .with_committed_leader_epoch(if ctx.version >= 5 { epoch } else { -1 })
                    .with_metadata(Some(s(metadata)))
            }
            None => r.with_committed_offset(-1).with_metadata(Some(s(""))),
        }
    };
    let topics = match req.topics {
        Some(ts) => ts
            .into_iter()
            .map(|t| {
                let have = by_topic.get(t.name.0.as_str());
                let parts = t
                    .partition_indexes
                    .iter()
                    .map(|i| {
                        part(
                            *i,
                            have.and_then(|v| v.iter().find(|(p, _)| p == i).map(|(_, c)| c)),
                        )
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(parts)
            })
            .collect(),
        None => {
            let mut names: Vec<_> = by_topic.keys().cloned().collect();
            names.sort();
            names
                .into_iter()
                .map(|n| {
                    let parts = by_topic[&n]
                        .iter()
                        .map(|(i, c)| part(*i, Some(c)))
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(n)))
                        .with_partitions(parts)
                })
                .collect()
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}

/// ListGroups.
pub fn list_groups(b: &KafkaBroker, ctx: &Ctx, req: ListGroupsRequest) -> ListGroupsResponse {
    let filter: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = b
        .groups
        .list()
        .into_iter()
        .filter(|(_, st, _)| filter.is_empty() || filter.contains(&st.name().to_lowercase()))
        .map(|(n, st, t)| {
            ListedGroup::default()
                .with_group_id(GroupId(s(n)))
                .with_protocol_type(s(t))
                .with_group_state(s(if ctx.version >= 4 { st.name() } else { "" }))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups: unknown groups are reported as "Dead", like Kafka does.
pub fn describe_groups(b: &KafkaBroker, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            let mut d = DescribedGroup::default().with_group_id(gid.clone());
            if req.include_authorized_operations {
                d = d.with_authorized_operations(super::metadata::GROUP_OPERATIONS);
            }
            match b.groups.describe(&gid.0) {
                None => {
                    let known = b
                        .core
                        .groups_with_offsets()
                        .map(|g| g.contains(&gid.0.to_string()))
                        .unwrap_or(false);
                    d.with_group_state(s(if known {
                        GroupState::Empty.name()
                    } else {
                        "Dead"
                    }))
                    .with_protocol_type(s(if known {
                        "consumer"
                    } else {
                        ""
                    }))
                }
                Some(g) => d
                    .with_group_state(s(g.state.name()))
                    .with_protocol_type(s(g.protocol_type))
                    .with_protocol_data(s(g.protocol))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|(id, inst, client, meta, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(id))
                                    .with_group_instance_id(inst.map(s))
                                    .with_client_id(s(client))
                                    .with_client_host(s("/127.0.0.1"))
                                    .with_member_metadata(meta)
                                    .with_member_assignment(assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: forgets a group's committed offsets; refused while the group has members.
pub fn delete_groups(b: &KafkaBroker, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    let results = req
        .groups_names
        .into_iter()
        .map(|gid| {
            let c = b.groups.delete(&gid.0);
            let r = DeletableGroupResult::default().with_group_id(gid);
            r.with_error_code(c)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

/// What the core keeps, opaque, with a committed offset: the client's leader epoch (4 bytes,
/// big-endian) then its metadata string.
pub(crate) fn attachment(leader_epoch: i32, metadata: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + metadata.len());
    v.extend_from_slice(&leader_epoch.to_be_bytes());
    v.extend_from_slice(metadata.as_bytes());
    v
}

/// The leader epoch and metadata string of an [`attachment`] (`-1` and `""` if absent).
pub(crate) fn from_attachment(a: &[u8]) -> (i32, String) {
    match a.split_first_chunk::<4>() {
        Some((epoch, rest)) => (
            i32::from_be_bytes(*epoch),
            String::from_utf8_lossy(rest).into_owned(),
        ),
        None => (-1, String::new()),
    }
}
